/** Chat templates of reasoning models, written for the tests in the forms their families use. */

/** Zephyr-style turns, with tools listed up front and assistant tool calls as `<tool_call>` blocks (the Hermes form). */
export const TOOLS_TEMPLATE =
  '{{ bos_token }}{% if tools %}<|tools|>{{ tools | tojson }}<|end|>{% endif %}' +
  '{% for m in messages %}<|{{ m.role }}|>{{ m.content }}' +
  '{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}{% endif %}<|end|>' +
  '{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}';

/**
 * ChatML turns, tools up front, calls as `<tool_call>` blocks; earlier answers lose their thought; `enable_thinking: false`
 * writes an empty one (Qwen3's way).
 */
export const THINKING_TEMPLATE =
  '{% if tools %}<|im_start|>system\n<tools>{{ tools | tojson }}</tools><|im_end|>\n{% endif %}' +
  "{%- for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' %}{{ m.content.split('</think>')[-1] | trim }}" +
  '{% for c in m.tool_calls or [] %}<tool_call>\n{{ c.function | tojson }}\n</tool_call>{% endfor %}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}' +
  '{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}';

/** The generation prompt opens the thought (DeepSeek-R1's template does); calls as `<tool_call>` blocks. */
export const OPEN_THOUGHT_TEMPLATE =
  '{% if tools %}<|tools|>{{ tools | tojson }}{% endif %}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}' +
  '{% for c in m.tool_calls or [] %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}{% endfor %}{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}';

/**
 * Llama 3.1-style turns: tools offered in the first user message, a call written as one JSON object with
 * `"parameters"`, tool results in the `ipython` role.
 */
export const LLAMA3_TOOLS_TEMPLATE =
  '{{ bos_token }}{% for m in messages %}' +
  "{% if m.role == 'tool' %}<|start_header_id|>ipython<|end_header_id|>\n\n{{ m.content }}<|eot_id|>" +
  '{% else %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n' +
  "{% if tools and loop.first and m.role == 'user' %}Answer with a JSON function call {\"name\": function name, \"parameters\": its arguments} if one helps.\n{{ tools | tojson }}\n\n{% endif %}" +
  '{% if m.tool_calls %}{% for c in m.tool_calls %}{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}{% endfor %}{% else %}{{ m.content }}{% endif %}<|eot_id|>{% endif %}' +
  '{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}';

/**
 * Mistral 7B v0.3-style turns: tools offered before the last user message in `[AVAILABLE_TOOLS]`, calls written
 * after the special token `[TOOL_CALLS]` as a JSON list whose objects carry the call's id, results in
 * `[TOOL_RESULTS]`; like Mistral's own templates it refuses any call id but nine letters and digits.
 */
export const MISTRAL_TOOLS_TEMPLATE =
  "{%- set users = messages | selectattr('role', 'equalto', 'user') | list %}{{ bos_token }}" +
  '{%- for m in messages %}' +
  "{%- if m.role == 'user' %}{% if tools and m == users[-1] %}[AVAILABLE_TOOLS] {{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}[INST] {{ m.content }}[/INST]" +
  '{%- elif m.tool_calls %}[TOOL_CALLS] [{% for c in m.tool_calls %}' +
  "{%- if c.id is not defined or c.id | length != 9 %}{{ raise_exception('Tool call IDs should be alphanumeric strings with length 9!') }}{% endif %}" +
  '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}, "id": "{{ c.id }}"}{% if not loop.last %}, {% endif %}{% endfor %}]{{ eos_token }}' +
  "{%- elif m.role == 'tool' %}" +
  "{%- if m.tool_call_id is not defined or m.tool_call_id | length != 9 %}{{ raise_exception('Tool call IDs should be alphanumeric strings with length 9!') }}{% endif %}" +
  '[TOOL_RESULTS] {"content": {{ m.content | tojson }}, "call_id": "{{ m.tool_call_id }}"}[/TOOL_RESULTS]' +
  '{%- else %} {{ m.content }}{{ eos_token }}{% endif %}' +
  '{%- endfor %}';

/**
 * Mistral Small 3.2-style turns (Mistral's later tokenizers): tools in `[AVAILABLE_TOOLS]` at the start, each call
 * written as `[TOOL_CALLS]name[ARGS]` and its arguments' JSON, results in `[TOOL_RESULTS]`.
 */
export const MISTRAL_ARGS_TOOLS_TEMPLATE =
  '{{ bos_token }}{% if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}' +
  '{%- for m in messages %}' +
  "{%- if m.role == 'user' %}[INST]{{ m.content }}[/INST]" +
  '{%- elif m.tool_calls %}{% for c in m.tool_calls %}[TOOL_CALLS]{{ c.function.name }}[ARGS]{{ c.function.arguments | tojson }}{% endfor %}{{ eos_token }}' +
  "{%- elif m.role == 'tool' %}[TOOL_RESULTS]{{ m.content }}[/TOOL_RESULTS]" +
  '{%- else %}{{ m.content }}{{ eos_token }}{% endif %}' +
  '{%- endfor %}';

/**
 * Granite 3-style turns: tools as an `available_tools` turn, calls written after the special token `<|tool_call|>`
 * as a JSON list, results as `tool_response` turns.
 */
export const GRANITE_TOOLS_TEMPLATE =
  "{%- if tools %}<|start_of_role|>available_tools<|end_of_role|>{{ tools | tojson }}<|end_of_text|>\n{% endif %}" +
  '{%- for m in messages %}' +
  '{%- if m.tool_calls %}<|start_of_role|>assistant<|end_of_role|><|tool_call|>[{% for c in m.tool_calls %}{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}{% if not loop.last %}, {% endif %}{% endfor %}]<|end_of_text|>\n' +
  "{%- elif m.role == 'tool' %}<|start_of_role|>tool_response<|end_of_role|>{{ m.content }}<|end_of_text|>\n" +
  '{%- else %}<|start_of_role|>{{ m.role }}<|end_of_role|>{{ m.content }}<|end_of_text|>\n{% endif %}' +
  '{%- endfor %}{% if add_generation_prompt %}<|start_of_role|>assistant<|end_of_role|>{% endif %}';

/**
 * Magistral-style turns: a default system prompt that asks for a thought between `[THINK]` and `[/THINK]` (special
 * tokens of Mistral's later vocabularies), `[INST]` turns, answers after the thought.
 */
export const MAGISTRAL_TEMPLATE =
  "{{ bos_token }}[SYSTEM_PROMPT]First draft your thinking between [THINK] and [/THINK], then answer.[/SYSTEM_PROMPT]" +
  "{%- for m in messages %}{% if m.role == 'user' %}[INST]{{ m.content }}[/INST]{% elif m.role == 'assistant' %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}";

/**
 * DeepSeek R1-style turns: tools listed up front, calls between `<｜tool▁calls▁begin｜>` and `<｜tool▁calls▁end｜>`, each
 * `<｜tool▁call▁begin｜>function<｜tool▁sep｜>name`, a newline and its arguments fenced as ```json, results in
 * `<｜tool▁outputs▁begin｜>`; like DeepSeek's own templates it joins the arguments into the text as a string.
 */
export const DEEPSEEK_TOOLS_TEMPLATE =
  '{{ bos_token }}{% if tools %}Functions you may call: {{ tools | tojson }}{% endif %}' +
  '{%- for m in messages %}' +
  "{%- if m.role == 'user' %}<｜User｜>{{ m.content }}" +
  "{%- elif m.role == 'assistant' and m.tool_calls %}<｜Assistant｜><｜tool▁calls▁begin｜>" +
  "{%- for c in m.tool_calls %}{% if not loop.first %}{{ '\\n' }}{% endif %}" +
  "{{ '<｜tool▁call▁begin｜>' + c.type + '<｜tool▁sep｜>' + c.function.name + '\\n```json\\n' + c.function.arguments + '\\n```<｜tool▁call▁end｜>' }}{% endfor %}" +
  '<｜tool▁calls▁end｜><｜end▁of▁sentence｜>' +
  "{%- elif m.role == 'tool' %}<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>{{ m.content }}<｜tool▁output▁end｜><｜tool▁outputs▁end｜>" +
  '{%- else %}<｜Assistant｜>{{ m.content }}<｜end▁of▁sentence｜>{% endif %}' +
  '{%- endfor %}{% if add_generation_prompt %}<｜Assistant｜>{% endif %}';

/**
 * Cohere Command R7B-style turns: tools and the thinking tags named in the system turn, calls as a JSON list of
 * `{"tool_call_id", "tool_name", "parameters"}` objects between `<|START_ACTION|>` and `<|END_ACTION|>`, answers in
 * `<|START_RESPONSE|>`, results in `<|START_TOOL_RESULT|>`.
 */
export const COHERE_TOOLS_TEMPLATE =
  '{{ bos_token }}<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>Think between <|START_THINKING|> and <|END_THINKING|>.' +
  '{% if tools %} Tools: {{ tools | tojson }}{% endif %}<|END_OF_TURN_TOKEN|>' +
  '{%- for m in messages %}' +
  "{%- if m.role == 'user' %}<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{{ m.content }}<|END_OF_TURN_TOKEN|>" +
  "{%- elif m.role == 'assistant' and m.tool_calls %}<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|><|START_ACTION|>[" +
  '{%- for c in m.tool_calls %}{"tool_call_id": "{{ loop.index0 }}", "tool_name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}{% if not loop.last %}, {% endif %}{% endfor %}' +
  ']<|END_ACTION|><|END_OF_TURN_TOKEN|>' +
  "{%- elif m.role == 'tool' %}<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|><|START_TOOL_RESULT|>{{ m.content }}<|END_TOOL_RESULT|><|END_OF_TURN_TOKEN|>" +
  '{%- else %}<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|><|START_RESPONSE|>{{ m.content }}<|END_RESPONSE|><|END_OF_TURN_TOKEN|>{% endif %}' +
  '{%- endfor %}{% if add_generation_prompt %}<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>{% endif %}';

/**
 * Gemma's turns (`<start_of_turn>user` / `model`): no tools, no tool role, no system role, and user and model must
 * alternate, each refused with raise_exception as Gemma 2's template does.
 */
export const GEMMA_TEMPLATE =
  "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}" +
  "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
  "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}" +
  "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}";

/**
 * OpenAI's harmony format as gpt-oss's template writes it (shortened): a system message naming the channels, the tools
 * as a TypeScript namespace in a developer message, each call a commentary message to `functions.<name>` ending in
 * `<|call|>`, results from the tool to the assistant, answers on the final channel; the reply opens after
 * `<|start|>assistant`; a call's turn shows its thought (`thinking`) before it.
 */
export const HARMONY_TEMPLATE =
  '<|start|>system<|message|>You are a test model.\nReasoning: {{ reasoning_effort if reasoning_effort is defined else \'medium\' }}\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.' +
  "{% if tools %}\nCalls to these tools must go to the commentary channel: 'functions'.{% endif %}<|end|>" +
  '{% if tools %}<|start|>developer<|message|># Tools\n\n## functions\n\nnamespace functions {\n{% for t in tools %}\n// {{ t.function.description }}\n' +
  'type {{ t.function.name }} = (_: {{ t.function.parameters | tojson }}) => any;\n{% endfor %}\n} // namespace functions<|end|>{% endif %}' +
  "{% for m in messages %}{% if m.role == 'user' or m.role == 'system' %}<|start|>{{ 'developer' if m.role == 'system' else 'user' }}<|message|>{{ m.content }}<|end|>" +
  "{% elif m.role == 'assistant' and m.tool_calls %}{% set c = m.tool_calls[0].function %}{% if m.thinking %}<|start|>assistant<|channel|>analysis<|message|>{{ m.thinking }}<|end|>{% endif %}<|start|>assistant to=functions.{{ c.name }}<|channel|>commentary json<|message|>{{ c.arguments | tojson }}<|call|>" +
  "{% elif m.role == 'assistant' %}<|start|>assistant<|channel|>final<|message|>{{ m.content }}<|end|>" +
  "{% elif m.role == 'tool' %}<|start|>functions.tool to=assistant<|channel|>commentary<|message|>{{ m.content | tojson }}<|end|>{% endif %}{% endfor %}" +
  '{% if add_generation_prompt %}<|start|>assistant{% endif %}';

/**
 * Qwen3-Coder-style turns: ChatML, tools up front, each call as `<tool_call>`, `<function=name>` and its arguments as
 * `<parameter=key>` blocks, a string as it is and any other value as JSON (the form of Qwen3-Coder's template).
 */
export const QWEN3_CODER_TEMPLATE =
  '{% if tools %}<|im_start|>system\n# Tools\n<tools>{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n</tools>\n' +
  'Call a function as <tool_call>\n<function=name>\n<parameter=key>\nvalue\n</parameter>\n</function>\n</tool_call><|im_end|>\n{% endif %}' +
  "{%- for m in messages %}{% if m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n" +
  '{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}' +
  "{%- for c in m.tool_calls or [] %}{{ '\\n<tool_call>\\n<function=' + c.function.name + '>\\n' }}" +
  "{%- for k, v in c.function.arguments | items %}{{ '<parameter=' + k + '>\\n' }}{{ v | tojson if v is mapping or (v is iterable and v is not string) else v | string }}{{ '\\n</parameter>\\n' }}{% endfor %}" +
  "{{- '</function>\\n</tool_call>' }}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/**
 * GLM-4.5-style turns: tools in the system turn, each call as `<tool_call>name` and its arguments as `<arg_key>` and
 * `<arg_value>` pairs, a string as it is and any other value as JSON (the form of GLM-4.5's template), results in the
 * observation role.
 */
export const GLM45_TEMPLATE =
  '[gMASK]<sop>{% if tools %}<|system|>\n# Tools\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}' +
  'Call a function as <tool_call>{function-name}\n<arg_key>{arg-key-1}</arg_key>\n<arg_value>{arg-value-1}</arg_value>\n...\n</tool_call>{% endif %}' +
  "{%- for m in messages %}{% if m.role == 'tool' %}<|observation|>\n<tool_response>\n{{ m.content }}\n</tool_response>" +
  '{% else %}<|{{ m.role }}|>\n{{ m.content }}' +
  "{%- for c in m.tool_calls or [] %}{{ '\\n<tool_call>' + c.function.name + '\\n' }}" +
  "{%- for k, v in c.function.arguments.items() %}<arg_key>{{ k }}</arg_key>\n<arg_value>{{ v if v is string else v | tojson }}</arg_value>\n{% endfor %}" +
  '</tool_call>{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}';
