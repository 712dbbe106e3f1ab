"""Write a tiny llama-architecture GGUF model with seeded random weights.

No model can be downloaded here, so the live tests make their own: 64 dimensions, 2 layers,
4 heads, a byte-level BPE vocabulary of a few hundred tokens (256 bytes, merges learned
from a fixed sentence list, ChatML special tokens), a ChatML chat template and mean
pooling, so an embedding model answers one vector per input. About 500 KB of f32.

Its output is word salad, but deterministic at temperature 0. One residual dimension
carries a constant that no layer writes to; the output head uses it to push down every
token that is not printable ASCII (raw high bytes, control characters, the special
tokens), so answers are valid UTF-8 text and never stop on their own: send `max_tokens`.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_FF = 128
N_CTX_TRAIN = 2048
N_MERGES = 120
SEED = 1234

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# ChatML that also renders tools, an assistant's tool call and tool results, the call as
# `<function=NAME>{...arguments}</function>` right after the turn starts. llama.cpp's
# `llama-server --jinja` reads the call format from the template: a call with no wrapper
# before it leaves no room for text, so with `tool_choice="required"` the grammar makes
# even random weights answer one well-formed call (a `<tool_call>` wrapper would let the
# model write text first, forever). One call per turn: the server then allows no
# parallel calls, and the grammar ends the answer after the first.
TOOLS_TEMPLATE = """\
{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}
{% endif %}Functions you may call:
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
To call one, answer <function=NAME>{ARGUMENTS}</function>.<|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'assistant' %}<|im_start|>assistant
{% if message.tool_calls %}
{%- set call = message.tool_calls[0].function %}<function={{ call.name }}>
{%- if call.arguments is string %}{{ call.arguments }}{% else %}{{ call.arguments | tojson }}{% endif %}</function>
{%- else %}{{ message.content }}{% endif %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>tool
{{ message.content }}<|im_end|>
{% elif message.role != 'system' %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

_CORPUS = (
    "the quick brown fox jumps over the lazy dog. "
    "what is the weather in the city today? call the function get_weather with the city. "
    "hello there, this is a tiny model that talks nonsense on purpose. "
    "the answer is in the stream, and the stream ends when the tokens run out. "
    "system user assistant tool function arguments name content role message. "
    "one two three four five six seven eight nine ten. "
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def _learn_merges(byte_map: dict[int, str], count: int) -> list[tuple[str, str]]:
    words = Counter(
        tuple(byte_map[b] for b in (" " + w if i else w).encode())
        for i, w in enumerate(_CORPUS.split(" "))
        if w
    )
    merges: list[tuple[str, str]] = []
    for _ in range(count):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, n in words.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += n
        if not pairs:
            break
        best = max(pairs.items(), key=lambda item: (item[1], item[0]))[0]
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for word, n in words.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return merges


def build_vocab() -> tuple[list[str], list[int], list[str], set[int]]:
    """Tokens, token types, merges, and the ids the model may produce."""
    import gguf

    byte_map = bytes_to_unicode()
    merges = _learn_merges(byte_map, N_MERGES)
    tokens = [byte_map[b] for b in range(256)]
    types = [int(gguf.TokenType.NORMAL)] * 256
    for left, right in merges:
        if left + right not in tokens:
            tokens.append(left + right)
            types.append(int(gguf.TokenType.NORMAL))
    reverse = {c: b for b, c in byte_map.items()}
    allowed = {
        i
        for i, tok in enumerate(tokens)
        if all(
            32 <= reverse[c] < 127 or reverse[c] == 10 for c in tok
        )  # printable ASCII or newline
    }
    for special in SPECIAL_TOKENS:
        tokens.append(special)
        types.append(int(gguf.TokenType.CONTROL))
    return tokens, types, [f"{a} {b}" for a, b in merges], allowed


def write_tiny_gguf(path: Path, *, seed: int = SEED) -> Path:
    """Write the model to `path` and return it."""
    import gguf

    tokens, types, merges, allowed = build_vocab()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def rand(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("matric-tiny-random")
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    eot, im_start, im_end = (tokens.index(t) for t in SPECIAL_TOKENS)
    del im_start
    writer.add_bos_token_id(eot)
    writer.add_eos_token_id(im_end)
    writer.add_pad_token_id(eot)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)

    # Dimension 0 of the residual stream is a constant no layer writes to ...
    embd = rand(n_vocab, N_EMBD, scale=0.5)
    embd[:, 0] = 4.0
    writer.add_tensor("token_embd.weight", embd)
    for layer in range(N_LAYER):
        prefix = f"blk.{layer}."
        writer.add_tensor(prefix + "attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(prefix + "ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v"):
            writer.add_tensor(prefix + name + ".weight", rand(N_EMBD, N_EMBD))
        attn_out = rand(N_EMBD, N_EMBD)
        attn_out[0, :] = 0.0
        writer.add_tensor(prefix + "attn_output.weight", attn_out)
        writer.add_tensor(prefix + "ffn_gate.weight", rand(N_FF, N_EMBD))
        writer.add_tensor(prefix + "ffn_up.weight", rand(N_FF, N_EMBD))
        ffn_down = rand(N_EMBD, N_FF)
        ffn_down[0, :] = 0.0
        writer.add_tensor(prefix + "ffn_down.weight", ffn_down)
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    # ... so the head can give every token outside `allowed` a large negative logit.
    head = rand(n_vocab, N_EMBD, scale=1.0)
    head[:, 0] = 0.0
    for token in range(n_vocab):
        if token not in allowed:
            head[token, 0] = -50.0
    writer.add_tensor("output.weight", head)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


if __name__ == "__main__":
    import sys

    out = write_tiny_gguf(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny.gguf"))
    print(out, out.stat().st_size)
