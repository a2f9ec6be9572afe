#!/usr/bin/python3
"""A streaming chat with a memserve server, on the memserve Python client.

    PYTHONPATH=clients/python:bazel-bin/proto /usr/bin/python3 clients/python/examples/chat.py \\
        --server localhost:50051 [--max_tokens 64] [--temperature 0] [--message TEXT]

Reads one message per line from standard input (or takes --message once),
streams each reply as it is generated and keeps the conversation. Ctrl-C
during a reply cancels it (the part that came stays); Ctrl-C at the prompt or
end of input leaves. Errors print the server's code and message.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from memserve import Client, MemserveError  # noqa: E402


def reply(client, conversation, args):
    stream = client.chat_stream(conversation, max_tokens=args.max_tokens,
                                temperature=args.temperature)
    try:
        for token in stream:
            sys.stdout.write(token.text)
            sys.stdout.flush()
    except KeyboardInterrupt:
        stream.cancel()
        sys.stdout.write(" [stopped]\n")
        return stream.text  # the part that came
    final = stream.final
    sys.stdout.write(final.trailing_text + "\n")
    sys.stderr.write("[%s, %d tokens, %.0f ms]\n" % (final.finish_reason,
                                                     final.completion_tokens, final.total_ms))
    return stream.text


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="localhost:50051")
    parser.add_argument("--max_tokens", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--message", default=None, help="send this one message and exit")
    args = parser.parse_args()
    conversation = []
    with Client(args.server, timeout=300) as client:
        try:
            if not client.health():
                sys.exit("%s: the server is not ready" % args.server)
            lines = [args.message] if args.message is not None else sys.stdin
            for line in lines:
                text = line.rstrip("\n")
                if not text:
                    continue
                conversation.append({"role": "user", "content": text})
                try:
                    answer = reply(client, conversation, args)
                except MemserveError as e:
                    conversation.pop()
                    sys.stderr.write("error: %s %s\n" % (e.code, e.message))
                    if args.message is not None:
                        return 1
                    continue
                conversation.append({"role": "assistant", "content": answer})
        except KeyboardInterrupt:
            return 130
        except MemserveError as e:
            sys.exit("error: %s %s" % (e.code, e.message))
    return 0


if __name__ == "__main__":
    sys.exit(main())
