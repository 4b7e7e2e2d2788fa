#!/usr/bin/env node
// V8 marks its heap on this process's JavaScript threads instead of helper threads, which would preempt onnxruntime's
// spinning threads where they take every CPU (README, "V8 marks on the JavaScript thread"). Set first, before any
// heap grows enough to be marked: V8 can crash if the flag changes while a marking cycle runs.
import { setFlagsFromString } from 'node:v8';

setFlagsFromString('--no-concurrent-marking');
await import('../dist/cli/reasonplug.js');
