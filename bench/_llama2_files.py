"""The small JSON files of meta-llama/Llama-2-7b-chat-hf, as the benchmark checkpoint needs them.

Their contents follow the published repository, so that both converters read the
same special tokens and chat template from the same places as for the real model.
"""

from __future__ import annotations

CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)


def _token(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


def special_tokens_map() -> dict:
    return {"bos_token": _token("<s>"), "eos_token": _token("</s>"), "unk_token": _token("<unk>")}


def tokenizer_config() -> dict:
    added = {"__type": "AddedToken"}
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": {**added, **_token("<s>")},
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": {**added, **_token("</s>")},
        "legacy": False,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": None,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": {**added, **_token("<unk>")},
    }


def generation_config() -> dict:
    return {
        "bos_token_id": 1,
        "do_sample": True,
        "eos_token_id": 2,
        "max_length": 4096,
        "pad_token_id": 0,
        "temperature": 0.6,
        "top_p": 0.9,
        "transformers_version": "4.31.0.dev0",
    }
