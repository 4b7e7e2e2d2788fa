/**
 * Worker-thread entry: owns the model session, its tokenizer and the decode loop, so that onnxruntime's
 * blocking `run` never stalls the main thread and tokens stream out as messages.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { locateModel } from '../modules/locate.js';
import { prepareDecoder } from '../onnx/prepared-cache.js';
import { TextTokenizer, TokenizerError } from '../tokenizer/tokenizer.js';
import { runDecodeLoop } from '../generate/decode-loop.js';
import { DecoderSession } from './decoder-session.js';
import type { FromWorker, ModelInfo, PromptInput, ToWorker, WireError, WorkerConfig } from './protocol.js';
import type { TokenEvent } from '../generate/types.js';

const port = parentPort!;
const config = workerData as WorkerConfig;
const post = (msg: FromWorker) => port.postMessage(msg);
const wire = (err: unknown): WireError => ({ name: (err as Error).name ?? 'Error', message: (err as Error).message ?? String(err) });

function toPromptIds(input: PromptInput, tokenizer: TextTokenizer | undefined): number[][] {
  if ('promptIds' in input) {
    const ids = input.promptIds;
    return ids.length > 0 && Array.isArray(ids[0]) ? (ids as number[][]) : [ids as number[]];
  }
  if (!tokenizer) throw new TokenizerError('this model has no tokenizer.json beside it: pass prompt ids instead of text');
  if ('messages' in input) {
    const text = tokenizer.applyChatTemplate(input.messages, input.chatTemplate ? { template: input.chatTemplate } : {});
    return [tokenizer.encode(text, false)];
  }
  return (Array.isArray(input.prompt) ? input.prompt : [input.prompt]).map((p) => tokenizer.encode(p));
}

/**
 * Posts streamed tokens at most once per {@link FLUSH_MS}: a message costs the worker ~10 µs, a real share
 * of a sub-millisecond step on small models. A held token waits at most one step plus the interval; the
 * first token of a generation is never held (time to first token).
 */
const FLUSH_MS = 1;

class StreamBatcher {
  private pending: TokenEvent[] = [];
  private lastPost = -Infinity;

  constructor(private readonly send: (events: TokenEvent[]) => void) {}

  push(event: TokenEvent): void {
    this.pending.push(event);
    if (performance.now() - this.lastPost >= FLUSH_MS) this.flush();
  }

  flush(): void {
    if (this.pending.length === 0) return;
    this.send(this.pending);
    this.pending = [];
    this.lastPost = performance.now();
  }
}

async function start(): Promise<{ session: DecoderSession; tokenizer?: TextTokenizer }> {
  const location = await locateModel(config.model);
  const prepared = await prepareDecoder(location.modelPath, {
    lastLogitsOnly: true,
    logitsFloat32: true,
    ...(config.cacheDir ? { cacheDir: config.cacheDir } : {}),
  });
  const session = await DecoderSession.create(
    { path: prepared.preparedPath, label: location.modelPath, weightBytes: prepared.weightBytes, ...(prepared.externalDataDir ? { externalDataDir: prepared.externalDataDir } : {}) },
    config.runtime,
  );
  const tokenizer = location.tokenizerDir
    ? await TextTokenizer.fromDirectory(location.tokenizerDir, location.generation ?? {})
    : undefined;
  const info: ModelInfo = {
    modelPath: location.modelPath,
    signature: session.signature,
    vocabSize: session.vocabSize,
    notes: prepared.notes,
    ...(session.intraOpThreads ? { intraOpThreads: session.intraOpThreads } : {}),
    ...(tokenizer
      ? {
          tokenizer: {
            vocabSize: tokenizer.vocabSize,
            ...(tokenizer.bosTokenId !== undefined ? { bosTokenId: tokenizer.bosTokenId } : {}),
            eosTokenIds: [...tokenizer.eosTokenIds],
            hasChatTemplate: tokenizer.chatTemplate !== undefined,
          },
        }
      : {}),
  };
  post({ type: 'ready', info });
  return { session, ...(tokenizer ? { tokenizer } : {}) };
}

async function serve(session: DecoderSession, tokenizer: TextTokenizer | undefined, msg: ToWorker): Promise<void> {
  if (msg.type === 'dispose') {
    await session.release();
    port.close();
    return;
  }
  try {
    if (msg.type === 'tokenize') {
      if (!tokenizer) throw new TokenizerError('this model has no tokenizer');
      post({ type: 'encoded', id: msg.id, ids: tokenizer.encode(msg.text, msg.addSpecialTokens) });
      return;
    }
    const abort = new Int32Array(msg.abort);
    const stream = new StreamBatcher((events) => post({ type: 'stream', id: msg.id, events }));
    const result = await runDecodeLoop(session, {
      prompts: toPromptIds(msg.input, tokenizer),
      options: msg.options,
      eosTokenIds: tokenizer?.eosTokenIds ?? [],
      ...(tokenizer ? { decode: (ids: readonly number[]) => tokenizer.decode(ids), vocabLimit: tokenizer.vocabSize } : {}),
      shouldAbort: () => Atomics.load(abort, 0) !== 0,
      onToken: (event) => stream.push(event),
    });
    stream.flush();
    post({ type: 'done', id: msg.id, result });
  } catch (err) {
    post({ type: 'error', id: msg.id, error: wire(err) });
  }
}

start().then(
  ({ session, tokenizer }) => {
    // One request at a time, in arrival order: the engine already queues, this keeps the worker honest.
    let chain = Promise.resolve();
    port.on('message', (msg: ToWorker) => {
      chain = chain.then(() => serve(session, tokenizer, msg));
    });
  },
  (err) => post({ type: 'failed', error: wire(err) }),
);
