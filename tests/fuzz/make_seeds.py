"""Writes the seed corpora of tests/fuzz/ (corpus/<target>/seed_*): a few
valid and near-valid inputs per target for libFuzzer to start from. The
files are committed; rerun after changing this script:

  bazel build //proto:memserve_py
  PYTHONPATH=bazel-bin/proto /usr/bin/python3 tests/fuzz/make_seeds.py

Crashes found later are kept beside them as corpus/<target>/crash_*.
"""
import json
import os
import struct

from memserve.v1 import memserve_pb2 as pb

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed_" + name), "wb") as f:
        f.write(data)


def request_convert():
    s = pb.SamplingParams
    gens = {
        "text": pb.GenerateRequest(text="The capital of Batourkor is"),
        "text_greedy": pb.GenerateRequest(text="Hi", sampling=s(temperature=0, max_tokens=8)),
        "ids": pb.GenerateRequest(token_ids=pb.TokenIds(ids=[256, 72, 105]),
                                  sampling=s(max_tokens=4, logprobs=5)),
        "ids_out_of_vocab": pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1, 300])),
        "stop": pb.GenerateRequest(text="x", sampling=s(stop=["a", "bc"], stop_token_ids=[257],
                                                        include_stop_str=True, min_tokens=1,
                                                        max_tokens=3)),
        "all_sampling": pb.GenerateRequest(text="y", request_id="req-1", sampling=s(
            temperature=0.7, top_k=40, top_p=0.9, min_p=0.05, repetition_penalty=1.1,
            frequency_penalty=0.5, presence_penalty=-0.5, seed=7, ignore_eos=True)),
        "over_context": pb.GenerateRequest(text="z" * 200),
        "short": pb.GenerateRequest(text="q", sampling=s(max_tokens=2)),
    }
    for name, m in gens.items():
        write("request_convert", "generate_" + name, b"\x00" + m.SerializeToString())
    chats = {
        "user": pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="Hi")]),
        "dialog": pb.ChatRequest(messages=[
            pb.ChatMessage(role="system", content="Be brief."),
            pb.ChatMessage(role="user", content="Where is Velmora?"),
            pb.ChatMessage(role="assistant", content="In Batourkor."),
            pb.ChatMessage(role="user", content="And?")], sampling=pb.SamplingParams(
                max_tokens=5)),
        "bad_role": pb.ChatRequest(messages=[pb.ChatMessage(role="bot", content="x")]),
        "empty": pb.ChatRequest(),
    }
    # Byte 0: odd = chat; (byte / 2) % 4 picks the template (plain, llama2, llama3, raw).
    for i, (name, m) in enumerate(chats.items()):
        write("request_convert", "chat_" + name, bytes([1 + 2 * i]) + m.SerializeToString())


def chat_template():
    convo = "system\tBe brief.\nuser\tHi\nassistant\tHello!\nuser\tHow are you?"
    for i, name in enumerate(["plain", "llama2", "llama3", "raw"]):
        write("chat_template", name + "_dialog", bytes([i]) + convo.encode())
        write("chat_template", name + "_single", bytes([i]) + b"What is the capital?")
    write("chat_template", "unknown_name", b"\xffmistral\nuser\tHi")
    write("chat_template", "bad_role", b"\x00bot\tx")
    write("chat_template", "bad_utf8", b"\x01user\t\xc3\x28")
    write("chat_template", "llama2_order", b"\x01assistant\tfirst\nuser\tsecond")


def config():
    with open(os.path.join(ROOT, "models", "demo", "config.json")) as f:
        text = f.read()
    write("config", "demo", text)
    c = json.loads(text)
    c2 = dict(c, tokenizer={"kind": "sp", "file": "tokenizer.model", "bos_id": 1, "eos_id": 2})
    write("config", "sp_tokenizer", json.dumps(c2))
    c3 = dict(c, memory={"layers": []})
    write("config", "no_memory", json.dumps(c3))
    write("config", "bad_dim", json.dumps(dict(c, dim=-1)))
    write("config", "not_object", "[1, 2, 3]")
    write("config", "deep", "[" * 100 + "]" * 100)


def safetensors_bytes(tensors, extra=None):
    """tensors: [(name, dtype, shape, nbytes)] laid out in order."""
    header, offset = {}, 0
    for name, dtype, shape, n in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    if extra:
        header["__metadata__"] = extra
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + bytes(range(256)) * (offset // 256) + \
        bytes(offset % 256)


def safetensors():
    write("safetensors", "two_tensors", safetensors_bytes(
        [("a", "F32", [2, 3], 24), ("b", "BF16", [4], 8)], extra={"format": "pt"}))
    write("safetensors", "scalar_and_empty", safetensors_bytes(
        [("s", "F32", [], 4), ("e", "F32", [0, 5], 0), ("i", "I64", [1], 8)]))
    write("safetensors", "empty_header", struct.pack("<Q", 2) + b"{}")
    good = safetensors_bytes([("a", "F32", [2, 2], 16)])
    write("safetensors", "truncated", good[:-3])
    write("safetensors", "header_too_long", struct.pack("<Q", 1 << 40) + b"{}")
    bad = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    write("safetensors", "shape_mismatch", struct.pack("<Q", len(bad)) + bad + bytes(8))


if __name__ == "__main__":
    request_convert()
    chat_template()
    config()
    safetensors()
