/** Chat templates of reasoning models, written for the tests in the forms their families use. */

/** ChatML turns, tools up front; earlier answers lose their thought; `enable_thinking: false` writes an empty one (Qwen3's way). */
export const THINKING_TEMPLATE =
  '{% if tools %}<|im_start|>system\n<tools>{{ tools | tojson }}</tools><|im_end|>\n{% endif %}' +
  "{%- for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' %}{{ m.content.split('</think>')[-1] | trim }}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}" +
  '{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}';

/** The generation prompt opens the thought (DeepSeek-R1's template does). */
export const OPEN_THOUGHT_TEMPLATE =
  '{% if tools %}<|tools|>{{ tools | tojson }}{% endif %}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}';

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
