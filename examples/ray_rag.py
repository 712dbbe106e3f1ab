"""Ray Data over two servers: embed a corpus into a vector store, answer prompts.

    python examples/ray_rag.py                 # two LocalServers, a local Ray cluster
    python examples/ray_rag.py --base-url http://a:8000/v1,http://b:8000/v1
        --embed-model nomic-embed-text --chat-model llama3.2    (one command line)

Without --base-url it starts two `LocalServer`s (langchain_matric.testing) and keeps
everything on 127.0.0.1. On a multi-node cluster, pass `--address auto` and give URLs
every node can reach, not 127.0.0.1: each actor builds its own clients on whichever
node Ray places it, and nothing here assumes one machine. Install the package (with the
`ray` extra) on every node, or ship it with Ray's `runtime_env`.
"""

from __future__ import annotations

import argparse
import contextlib
import os

# Read when Ray is imported: a local cluster binds 127.0.0.1 only, and sends no usage
# stats. Leave RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER unset on a real multi-node cluster.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_matric import ChatMatric, MatricEmbeddings
from langchain_matric.ray import embed, generate
from langchain_matric.testing import LocalServer

CORPUS = [
    f"Note {i}: the {topic} team meets on day {i % 7}."
    for i, topic in enumerate(["search", "billing", "ops", "design", "data"] * 20)
]
QUESTIONS = ["When does the billing team meet?", "Who meets on day 3?", "What does ops do?"]


def main() -> None:
    """Embed CORPUS, store the vectors, answer QUESTIONS with the nearest note."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="comma-separated OpenAI-compatible /v1 URLs")
    parser.add_argument("--embed-model", default="any")
    parser.add_argument("--chat-model", default="any")
    parser.add_argument("--address", help="a running cluster ('auto'); default: a local one")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        if args.base_url:
            urls = args.base_url.split(",")
        else:  # two stand-in servers on loopback
            servers = [stack.enter_context(LocalServer(embedding_dim=64)) for _ in range(2)]
            urls = [server.openai_base_url for server in servers]
        if args.address:
            ray.init(address=args.address)
        else:
            ray.init(num_cpus=2, include_dashboard=False)
        stack.callback(ray.shutdown)
        ray.data.DataContext.get_current().enable_progress_bars = False

        # 1. Embed the corpus: two actors, each spread over both endpoints.
        embeddings = MatricEmbeddings(backend="openai", base_url=urls, model=args.embed_model)
        docs = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(CORPUS)])
        rows = embed(docs, embeddings, actors=2, batch_size=25, on_error="column").take_all()

        # 2. Into a vector store (here in memory; any store taking vectors works).
        store = InMemoryVectorStore(embeddings)
        for row in rows:
            if row["error"] is None:
                store.store[str(row["id"])] = {
                    "id": str(row["id"]),
                    "vector": row["embedding"].tolist(),
                    "text": row["text"],
                    "metadata": {},
                }
        print(f"stored {len(store.store)} of {len(CORPUS)} documents")

        # 3. A prompt column built from retrieval, answered by the pool.
        prompts = [
            {
                "question": q,
                "prompt": f"Context: {store.similarity_search(q, k=1)[0].page_content}"
                f"\nQuestion: {q}",
            }
            for q in QUESTIONS
        ]
        chat = ChatMatric(backend="openai", base_url=urls, model=args.chat_model)
        answers = generate(ray.data.from_items(prompts), chat, actors=1, on_error="column")
        for row in answers.take_all():
            answer = row["output"] if row["error"] is None else row["error"]
            print(f"{row['question']} -> {answer}".replace("\n", " | "))
        embeddings.close()
        chat.close()


if __name__ == "__main__":
    main()
