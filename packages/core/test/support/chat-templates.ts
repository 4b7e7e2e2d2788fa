/** Chat templates of reasoning models, written for the tests in the forms their families use. */

/** ChatML turns, tools up front; earlier answers lose their thought; `enable_thinking: false` writes an empty one (Qwen3's way). */
export const THINKING_TEMPLATE =
  '{% if tools %}<|im_start|>system\n<tools>{{ tools | tojson }}</tools><|im_end|>\n{% endif %}' +
  "{%- for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' %}{{ m.content.split('</think>')[-1] | trim }}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}" +
  '{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}';

/** The generation prompt opens the thought (DeepSeek-R1's template does). */
export const OPEN_THOUGHT_TEMPLATE =
  '{% if tools %}<|tools|>{{ tools | tojson }}{% endif %}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}';
