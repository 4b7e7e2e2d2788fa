/**
 * Chat templates rendered as transformers renders them with Python's jinja2, where @huggingface/jinja alone differs
 * (see `jinja-python.ts`): excerpts of real templates, each with the text jinja2 3.1.6 renders from it in
 * transformers' environment (written here, not computed). Also the tool-use template that cannot render without
 * tools (Hermes 3's), and the error of a template the renderer cannot run.
 */
import { expect } from 'chai';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TextTokenizer, TokenizerError, type ChatMessage } from '../src/tokenizer/tokenizer.js';
import { toolCallSyntaxOf } from '../src/constrain/tool-syntax.js';
import { models } from '../../../test/support/paths.js';
import { testDir } from './support/models.js';

/** Hermes 3's tool_use template, shortened: it loops over `tools` unguarded, so it cannot render without them. */
const HERMES3_TOOL_USE = `{{- bos_token }}
{{- '<|im_start|>system\n' }}
{{- "You are a function calling AI model. You are provided with function signatures within <tools></tools> XML tags. Here are the available tools: <tools> " }}
{%- for tool in tools %}
    {%- if tool.function is defined %}
        {%- set tool = tool.function %}
    {%- endif %}
    {{- '{"type": "function", "function": ' }}
    {{- '{"name": "' + tool.name + '", ' }}
    {{- '"description": "' + tool.description + '\n\n' }}
    {%- for param_name, param_fields in tool.parameters.properties|items %}
        {%- if loop.first %}
            {{- "    Args:\n" }}
        {%- endif %}
        {{- "        " + param_name + ": " + param_fields.description|trim }}
    {%- endfor %}
    {{- '"' }}
    {{- ', "parameters": ' }}
    {{- tool.parameters|tojson }}
    {{- "}" }}
{%- endfor %}
{{- " </tools>" }}
{{- "<tool_call>\n" }}
{{- '{"name": <function-name>, "arguments": <args-dict>}\n' }}
{{- '</tool_call><|im_end|>\n' }}
{%- for message in messages %}
    {%- if message.role == "user" or message.role == "system" or (message.role == "assistant" and message.tool_calls is not defined) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}`;

/** Qwen3's assistant turn: `.strip('\\n')` and `.lstrip('\\n')` take newlines only, not the spaces inside them. */
const QWEN3_THINK = `{%- for message in messages %}
    {%- if message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set content = message.content %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- endif %}
        {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}`;

/** Qwen3-Coder's calls: a scalar argument is written by `|string` (`True`, `None`). */
const QWEN3_CODER_CALLS = `{%- for message in messages %}
    {%- if message.role == "assistant" %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n<function=' + tool_call.name + '>\\n' }}
            {%- if tool_call.arguments is defined %}
                {%- for args_name, args_value in tool_call.arguments|items %}
                    {{- '<parameter=' + args_name + '>\\n' }}
                    {%- set args_value = args_value | tojson | safe if args_value is mapping or (args_value is sequence and args_value is not string) else args_value | string %}
                    {{- args_value }}
                    {{- '\\n</parameter>\\n' }}
                {%- endfor %}
            {%- endif %}
            {{- '</function>\\n</tool_call>' }}
        {%- endfor %}
    {%- endif %}
{%- endfor %}`;

/** Seed-OSS's reflection interval: a dict literal with integer keys, sorted by `dictsort` and indexed by an integer. */
const SEED_OSS_BUDGET = `{%- if not thinking_budget is defined %}
{%- set thinking_budget = -1 -%}
{%- endif -%}
{%- set budget_reflections_v05 = {
     0:      0,
     512:    128,
     1024:   256,
     2048:   512,
     4096:   512,
     8192:   1024,
     16384:  1024
} -%}
{%- set ns = namespace(interval = None) -%}
{%- for k, v in budget_reflections_v05 | dictsort -%}
    {%- if ns.interval is none and thinking_budget <= k -%}
        {%- set ns.interval = v -%}
    {%- endif -%}
{%- endfor -%}
{%- if ns.interval is none -%}
    {%- set ns.interval = budget_reflections_v05[16384] -%}
{%- endif -%}
{{ "You will reflect on your thinking process every "}}{{ns.interval}}{{" tokens."}}`;

/** Hunyuan (Hy3)'s special tokens, written with `str.format`. */
const HY3_TOKENS = `{%- set HYTK = ':opensource' %}
{%- set eos_token = '<｜hy_eos{}｜>'.format(HYTK) %}
{%- set bos_token = '<｜hy_begin_of_sentence{}｜>'.format(HYTK) %}
{%- set user_token = '<｜hy_User{}｜>'.format(HYTK) %}
{{- bos_token }}{%- for message in messages %}{{ user_token + message.content + eos_token }}{%- endfor %}`;

/** Apriel 1.5's tools: skipped when `tools` is None (not undefined), and each written by `|string`, a Python dict. */
const APRIEL_15_TOOLS = `{%- set available_tools_string = '' -%}
{%- if tools is not none and tools|length > 0 -%}
    {%- set available_tools_string -%}
Here are the available tools:
<available_tools>
{% for tool in tools %}
{{ tool|string }}
{% endfor %}
</available_tools>
{%- endset -%}
{%- endif -%}
{{- available_tools_string }}
{%- for message in messages %}{{ '<|begin_user|>\\n' + message.content }}{%- endfor %}`;

/** Functionary v3.1's code-interpreter test: `selectattr` of None is empty, and a boolean prints as `False`. */
const FUNCTIONARY_31_TOOLS = `{%- if not tools is defined -%}
    {%- set tools = none -%}
{%- endif -%}

{%- set has_code_interpreter = tools | selectattr("type", "equalto", "code_interpreter") | list | length > 0 -%}
{%- if has_code_interpreter -%}
    {%- set tools = tools | rejectattr("type", "equalto", "code_interpreter") | list -%}
{%- endif -%}
{{ has_code_interpreter }}`;

/** Functionary v3.2's parameter limits: tuples unpacked in a `for`. */
const FUNCTIONARY_32_LIMITS = `{%- for tool in tools %}{%- for name, param in tool.function.parameters.properties|items %}
        {{- name }}
        {%- for field, field_name in [("maximum", "Maximum"), ("minimum", "Minimum"), ("maxLength", "Maximum length"), ("minLength", "Minimum length")] -%}
            {%- if field in param -%}
                {{ " " + field_name ~ "=" ~ param[field] }}
            {%- endif -%}
        {%- endfor -%}
{% endfor %}{% endfor %}`;

/** MiniCPM5's count of calls, by `|min`. */
const MINICPM5_CALLS = `{%- for message in messages %}
        {%- if message.tool_calls %}
            {%- set content_parts = message.content.split('<tool_sep>') %}
            {%- set tool_calls_count = message.tool_calls|length %}
            {%- set tool_sep_count = content_parts|length - 1 %}
            {%- set min_count = [tool_calls_count, tool_sep_count]|min %}
            {{- min_count }}
        {%- endif %}
{%- endfor %}`;

/** Phi-4-mini's messages (llama.cpp's version): a `for` over a message's undefined `tool_calls` runs no times. */
const PHI4_MINI_MESSAGES = `{%- for message in messages -%}
    {%- if message['role'] == 'tool' -%}
        {{- '<|tool_response|>' + (message['content'] | tojson) + '<|end|>' -}}
    {%- elif message['role'] != 'system' -%}
        {{- '<|' + message['role'] + '|>' -}}
        {%- if message.content -%}
            {{- message['content'] -}}
        {%- endif -%}  
        {%- for tool_call in message.tool_calls -%}
            {{- '<|tool_call|>' + (tool_call['function'] | tojson) + '<|/tool_call|>' -}}
        {%- endfor -%}
        {{- '<|end|>' -}}
    {%- endif -%}
{%- endfor -%}`;

/** Python's semantics the templates above do not show: `'-' * 3`, `count`, `map('tojson')`, `capitalize`, printed None and booleans, `reject`. */
const PYTHON_BITS = "{{ '-' * 3 }}|{{ 'a,b,,c'.count(',') }}|{{ l | map('tojson') | join(', ') }}|{{ 'hELLO wORLD' | capitalize }}|{{ none }}|{{ true ~ '/' ~ none }}|{{ 1.0 }}|{{ [none, 'it\\'s'] | string }}|{{ x | string }}|{{ ['a', 'code_interpreter'] | reject('equalto', 'code_interpreter') | join }}";

const WEATHER = {
  type: 'function',
  function: { name: 'get_weather', description: 'Get the weather', parameters: { type: 'object', properties: { city: { type: 'string', description: ' City name ' }, days: { type: 'integer', minimum: 1, maximum: 16 } }, required: ['city'] } },
};
const HI: ChatMessage[] = [{ role: 'user', content: 'Hi' }];
const call = (id: string, name: string, args: Record<string, unknown>) => ({ id, type: 'function', function: { name, arguments: args } });

/** A template, what it renders (messages and options), and the text jinja2 renders. */
interface Case {
  name: string;
  template: string;
  messages: ChatMessage[];
  tools?: unknown[];
  extra?: Record<string, unknown>;
  jinja2: string;
}

const CASES: Case[] = [
  {
    name: "Qwen3's reasoning, stripped of newlines only",
    template: QWEN3_THINK,
    messages: [...HI, { role: 'assistant', content: '\n  It is sunny.', reasoning_content: '\n I should check. \n' }],
    jinja2: "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n I should check. \n</think>\n\n  It is sunny.<|im_end|>\n",
  },
  {
    name: "Qwen3-Coder's boolean and null arguments, as |string writes them",
    template: QWEN3_CODER_CALLS,
    messages: [{ role: 'user', content: 'Search' }, { role: 'assistant', content: '', tool_calls: [call('c1', 'search', { query: 'cats', exact: true, limit: null, ratio: 0.5 })] }],
    jinja2: "\n<tool_call>\n<function=search>\n<parameter=query>\ncats\n</parameter>\n<parameter=exact>\nTrue\n</parameter>\n<parameter=limit>\nNone\n</parameter>\n<parameter=ratio>\n0.5\n</parameter>\n</function>\n</tool_call>",
  },
  { name: "Seed-OSS's budget table (integer keys)", template: SEED_OSS_BUDGET, messages: HI, extra: { thinking_budget: 1000 }, jinja2: "You will reflect on your thinking process every 256 tokens." },
  { name: "Seed-OSS's budget table, with no budget", template: SEED_OSS_BUDGET, messages: HI, jinja2: "You will reflect on your thinking process every 0 tokens." },
  { name: "Hy3's special tokens (str.format)", template: HY3_TOKENS, messages: HI, jinja2: "<｜hy_begin_of_sentence:opensource｜><｜hy_User:opensource｜>Hi<｜hy_eos:opensource｜>" },
  { name: "Apriel 1.5's tools, without tools", template: APRIEL_15_TOOLS, messages: HI, jinja2: "<|begin_user|>\nHi" },
  { name: "Apriel 1.5's tools (|string of a dict)", template: APRIEL_15_TOOLS, messages: HI, tools: [WEATHER], jinja2: "Here are the available tools:\n<available_tools>\n{'type': 'function', 'function': {'name': 'get_weather', 'description': 'Get the weather', 'parameters': {'type': 'object', 'properties': {'city': {'type': 'string', 'description': ' City name '}, 'days': {'type': 'integer', 'minimum': 1, 'maximum': 16}}, 'required': ['city']}}}\n</available_tools><|begin_user|>\nHi" },
  { name: "Functionary v3.1's code-interpreter test, without tools", template: FUNCTIONARY_31_TOOLS, messages: HI, jinja2: "False" },
  { name: "Functionary v3.2's parameter limits (tuples in a for)", template: FUNCTIONARY_32_LIMITS, messages: HI, tools: [WEATHER], jinja2: "citydays Maximum=16 Minimum=1" },
  {
    name: "MiniCPM5's call count (|min)",
    template: MINICPM5_CALLS,
    messages: [...HI, { role: 'assistant', content: 'a<tool_sep>b', tool_calls: [call('c1', 'get_weather', { city: 'Paris' }), call('c2', 'get_weather', { city: 'Rome' })] }],
    jinja2: "1",
  },
  {
    name: "min and max by an attribute's path",
    template: "{{ xs|min(attribute='a') }} {{ xs|max(attribute='a') }} {{ ys|max(attribute='b.c') }} {{ ['B', 'a']|max }} {{ ['a', 'B']|max(true) }} {{ xs|max(false, 'a') }}",
    messages: HI,
    extra: { xs: [{ a: 2 }, { a: 1 }, { a: 3 }], ys: [{ b: { c: 5 } }, { b: { c: 9 } }] },
    jinja2: "{'a': 1} {'a': 3} {'b': {'c': 9}} B a {'a': 3}",
  },
  { name: "Phi-4-mini's messages without tool calls (for over undefined)", template: PHI4_MINI_MESSAGES, messages: [...HI, { role: 'assistant', content: 'Hello!' }], jinja2: "<|user|>Hi<|end|><|assistant|>Hello!<|end|>" },
  { name: "Python's operators, methods and filters", template: PYTHON_BITS, messages: HI, extra: { l: [{ a: 'é' }, [1, null]] }, jinja2: "---|3|{\"a\": \"é\"}, [1, null]|Hello world|None|True/None|1.0|[None, \"it's\"]||a" },
];

describe('chat templates rendered as jinja2 renders them', function () {
  this.timeout(60_000);
  let dir: string;
  let tok: TextTokenizer;

  before(async () => {
    // The tiny Llama's tokenizer with Hermes 3's pair of templates: a default one and one named tool_use.
    dir = testDir('jinja-python');
    await copyFile(join(models.llamaFp16, 'tokenizer.json'), join(dir, 'tokenizer.json'));
    const config = JSON.parse(await readFile(join(models.llamaFp16, 'tokenizer_config.json'), 'utf8'));
    const chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}{% endfor %}";
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: [{ name: 'default', template: chatml }, { name: 'tool_use', template: HERMES3_TOOL_USE }] }));
    tok = await TextTokenizer.fromDirectory(dir);
  });

  it("takes a tool_use template that cannot render without tools (Hermes 3's) for one that shows them, read as hermes calls", () => {
    expect(tok.rendersTools()).to.equal(true);
    expect(toolCallSyntaxOf(tok.toolUseTemplate, tok.rendersTools())).to.equal('hermes');
    // (the parameter with no description: `undefined|trim` is empty)
    expect(tok.applyChatTemplate([{ role: 'user', content: 'Weather in Paris?' }], { tools: [WEATHER] })).to.equal("<s><|im_start|>system\nYou are a function calling AI model. You are provided with function signatures within <tools></tools> XML tags. Here are the available tools: <tools> {\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the weather\n\n    Args:\n        city: City name        days: \", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \" City name \"}, \"days\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 16}}, \"required\": [\"city\"]}} </tools><tool_call>\n{\"name\": <function-name>, \"arguments\": <args-dict>}\n</tool_call><|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n");
  });

  for (const c of CASES) {
    it(`renders ${c.name} as jinja2 does`, () => {
      const { template, tools, extra } = c;
      expect(tok.applyChatTemplate(structuredClone(c.messages), { template, tools, extra, addGenerationPrompt: false })).to.equal(c.jinja2);
    });
  }

  it('names a construct the renderer cannot run, and the template it is in, rather than blaming the messages', async () => {
    const unsupported = '{{ messages[0].content | wordcount }}';
    const other = testDir('jinja-python-unsupported');
    await copyFile(join(dir, 'tokenizer.json'), join(other, 'tokenizer.json'));
    await writeFile(join(other, 'tokenizer_config.json'), JSON.stringify({ chat_template: unsupported }));
    const model = await TextTokenizer.fromDirectory(other);
    const refused = () => model.applyChatTemplate(HI);
    expect(refused).to.throw(TokenizerError, `${join(other, 'tokenizer_config.json')}: chat template uses a construct the chat template renderer does not support: Unknown StringValue filter: wordcount`);
    expect(refused).not.to.throw(/cannot render these messages/);
    expect(() => tok.applyChatTemplate(HI, { template: unsupported })).to.throw(TokenizerError, /^the given chat template uses a construct/);
    // The template's own refusal is still the messages' fault.
    expect(() => tok.applyChatTemplate(HI, { template: "{{ raise_exception('System role not supported') }}" })).to.throw(
      TokenizerError,
      'the chat template cannot render these messages: System role not supported',
    );
  });

  it("refuses a range() longer than jinja2's sandbox allows, as jinja2 does, rather than building it", () => {
    // range(10**8) ran the model worker out of memory after half a minute.
    expect(tok.applyChatTemplate(HI, { template: '{% for i in range(100000) %}x{% endfor %}' })).to.have.length(100_000);
    expect(tok.applyChatTemplate(HI, { template: '{{ range(0, 10**9, 10**4) | length }}' })).to.equal('100000');
    expect(() => tok.applyChatTemplate(HI, { template: '{% for i in range(100001) %}x{% endfor %}' })).to.throw(
      TokenizerError,
      "the chat template cannot render these messages: range too big: the template asks for 100001 numbers, and jinja2's sandbox (transformers') gives at most 100000",
    );
  });
});
