"""A classroom at once: 30 simulated students on one app, each doing a realistic session.

Starts the app (``app.py``, bundled models) on loopback at a free port in a subprocess, then:
1. baseline: one user alone runs the session once (per-endpoint latency with no contention);
2. load: ``--users`` threads, each with its own ``gradio_client`` session, arrive within ``--arrival``
   seconds and run ``--rounds`` sessions, pausing ``--think`` seconds (on average) between requests:
   analyze a text, change the attention head three times, look at the next-token distribution under
   two temperatures, start step-by-step generation and sample three tokens, compare decoding strategies.
3. re-plots during heavy work: four users loop long decoding comparisons (``/strategies``, queued two
   at a time) while one user moves the attention head: a re-plot queued behind decoding would take
   at least as long as one comparison; one that runs beside it is only slowed by the shared CPU.
Prints p50/p95 latency per endpoint under load and its ratio to the baseline p50, errors (target: zero;
``⚠️`` sentences such as "the text has ended" are listed apart), and the server's peak resident memory.

``--real`` serves real-size models instead of the bundled ones: a GPT-2-small-shaped checkpoint (12 x 12
heads x 768, GPT-2's tokenizer) and a BERT-base-shaped one (random weights, built once under
``build/real-size`` by ``bench/payloads.py``; a random model costs what the real one does). ``--users``
takes a list (``10,30``): each class size runs in turn on the same server, and the largest one whose
re-plots (``/attention``) stay under 1 s p95 is named. The machine is shared: the load average is printed
beside every figure, and the figures are noisy.

    python bench/load.py [--users 30] [--rounds 1] [--think 1.0] [--arrival 10] [--real]

Client-side HTTP timeouts are 120 s: a slow answer counts as latency; an error is a failed or ⚠️ answer.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil
from gradio_client import Client

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "To be, or not to be, that is the question.",
    "In the beginning God created the heaven and the earth.",
    "The tiger jumped out of a tree to get a drink because it was thirsty.",
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate.",
    "And God said, Let there be light: and there was light.",
]
MODELS = ["tiny-gpt2"] * 4 + ["tiny-t5"]  # most classes start with the decoder
GENERATES = {"tiny-gpt2", "tiny-t5"}  # models whose sessions also sample and decode (encoders do not)
REPLOT_GOAL = 1.0  # seconds, p95 of /attention
KNOBS = (0, 1.0, 0.0, 1.0, False)  # top-k, top-p, min-p, repetition penalty, greedy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the app exited with code {server.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the app did not answer at {url} within {timeout:.0f} s")


class PeakMemory(threading.Thread):
    """Samples the resident memory of the server (and any children) until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.process, self.peak, self.done = psutil.Process(pid), 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                rss = self.process.memory_info().rss + sum(
                    c.memory_info().rss for c in self.process.children(recursive=True)
                )
                self.peak = max(self.peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.1)


class Recorder:
    def __init__(self, think: float = 0.0):
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.messages: list[str] = []  # the app's own one-sentence answers to a request it cannot serve
        self.lock = threading.Lock()
        self.think = think

    def call(self, client: Client, endpoint: str, *args):
        if self.think:
            time.sleep(random.uniform(0.5, 1.5) * self.think)  # a student reads the last answer
        t0 = time.perf_counter()
        try:
            result = client.predict(*args, api_name=endpoint)
        except Exception as err:  # every failure counts, whatever its kind
            with self.lock:
                self.errors.append(f"{endpoint}: {type(err).__name__}: {err}"[:300])
            return None
        elapsed = time.perf_counter() - t0
        shown = str(result)
        with self.lock:
            self.latency[endpoint].append(elapsed)
            if "⚠️" in shown:
                self.messages.append(f"{endpoint}: {shown[:160]}")
        return result


def session(client: Client, rec: Recorder, rng: random.Random) -> None:
    """One student's session: analyze, change the head, the distribution, sample, decode (encoders: the first two)."""
    model, text = rng.choice(MODELS), rng.choice(TEXTS)
    rec.call(client, "/analyze", model, text, "")
    kind = "cross" if model == "tiny-t5" else "self"
    for _ in range(3):
        rec.call(client, "/attention", kind, rng.randrange(3), rng.randrange(4), "weights")
    if model not in GENERATES:
        return
    for temperature in (1.0, rng.choice([0.5, 1.5])):
        rec.call(client, "/next_token", 15, "probabilities", temperature, *KNOBS)
    settings = (1.0, *KNOBS)
    rec.call(client, "/step_start", None, 0, *settings)
    for _ in range(3):
        rec.call(client, "/step_next", None, rng.randrange(100), *settings)
    rec.call(client, "/strategies", 8, 2, 3, 1.0, rng.randrange(100), *settings)


def run_users(url: str, users: int, rounds: int, rec: Recorder, arrival: float = 0.0) -> float:
    def user(k: int) -> None:
        rng = random.Random(k)
        time.sleep(rng.uniform(0, arrival))
        client = Client(url, verbose=False, httpx_kwargs={"timeout": 120})
        for _ in range(rounds):
            session(client, rec, rng)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=user, args=(k,)) for k in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def replots_during_heavy_work(url: str, replots: int = 20) -> tuple[Recorder, Recorder]:
    """(heavy, light): long ``/strategies`` calls in four sessions while one session re-plots attention."""
    heavy, light, done = Recorder(), Recorder(), threading.Event()

    def decoder_user(k: int) -> None:
        client = Client(url, verbose=False, httpx_kwargs={"timeout": 120})
        heavy.call(client, "/analyze", MODELS[0], TEXTS[k % len(TEXTS)], "")
        while not done.is_set():
            heavy.call(client, "/strategies", 32, 8, 4, 1.0, k, 1.0, *KNOBS)

    threads = [threading.Thread(target=decoder_user, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    client = Client(url, verbose=False, httpx_kwargs={"timeout": 120})
    light.call(client, "/analyze", MODELS[0], TEXTS[0], "")
    time.sleep(3)  # the decoding queue is full by now
    for i in range(replots):
        light.call(client, "/attention", "self", i % 4, (i // 4) % 4, "weights")
    done.set()
    for t in threads:
        t.join()
    return heavy, light


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def load_average() -> str:
    return "load " + "/".join(f"{x:.1f}" for x in os.getloadavg())


def use_real_size_models() -> None:
    """Sessions on the GPT-2-small- and BERT-base-shaped checkpoints (built once) instead of the bundled models."""
    global MODELS, GENERATES
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from payloads import real_size_checkpoint

    gpt2, bert = (str(real_size_checkpoint(kind)) for kind in ("gpt2-small", "bert-base"))
    MODELS, GENERATES = [gpt2] * 4 + [bert], {gpt2}


def report(users: int, args, loaded: Recorder, alone: Recorder, wall: float) -> float:
    """Print one class size's table; returns its /attention p95 in seconds."""
    requests = sum(len(v) for v in loaded.latency.values()) + len(loaded.errors)
    print(f"\n{users} users x {args.rounds} session(s), think {args.think:g} s, arrival within {args.arrival:g} s: "
          f"{requests} requests in {wall:.1f} s ({requests / wall:.1f} requests/s); {os.cpu_count()} CPUs, "
          f"{load_average()} (other work on the machine counts)")  # fmt: skip
    print(f"{'endpoint':<14}{'calls':>6}{'alone p50 ms':>14}{'p50 ms':>9}{'p95 ms':>9}{'p50/alone':>11}  load")
    for endpoint, times in loaded.latency.items():
        base = statistics.median(alone.latency[endpoint]) if alone.latency.get(endpoint) else float("nan")
        p50, p95 = percentile(times, 50), percentile(times, 95)
        print(
            f"{endpoint:<14}{len(times):>6}{base * 1000:>14.0f}{p50 * 1000:>9.0f}{p95 * 1000:>9.0f}"
            f"{p50 / base:>11.1f}  {load_average()}"
        )
    print(f"errors: {len(loaded.errors)}; the app's own ⚠️ answers: {len(loaded.messages)}")
    for err in loaded.errors[:10] + sorted(set(loaded.messages))[:5]:
        print("  ", err)
    replots = loaded.latency.get("/attention")
    return percentile(replots, 95) if replots else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="30", help="simulated users; a list (10,30) runs each in turn")
    parser.add_argument("--rounds", type=int, default=1, help="sessions per user")
    parser.add_argument("--think", type=float, default=1.0, help="mean seconds between a user's requests")
    parser.add_argument("--arrival", type=float, default=10.0, help="users arrive within this many seconds")
    parser.add_argument("--real", action="store_true", help="GPT-2-small- and BERT-base-shaped models")
    args = parser.parse_args()
    classes = [int(n) for n in str(args.users).split(",")]
    if args.real:
        use_real_size_models()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = start_server(port)
    replot_p95, errors = {}, []
    try:
        wait_until_up(url, server)
        memory = PeakMemory(server.pid)
        memory.start()
        idle_rss = psutil.Process(server.pid).memory_info().rss
        alone = Recorder()
        run_users(url, 1, 1, alone)  # warm-up: loads the models, compiles nothing twice
        alone = Recorder()
        run_users(url, 1, 2, alone)
        errors += alone.errors
        print(f"models: {', '.join(sorted(set(MODELS)))}")
        for users in classes:
            loaded = Recorder(args.think)
            wall = run_users(url, users, args.rounds, loaded, args.arrival)
            replot_p95[users] = report(users, args, loaded, alone, wall)
            errors += loaded.errors
        heavy, light = replots_during_heavy_work(url)
        errors += heavy.errors + light.errors
        memory.done.set()
        memory.join()
    finally:
        server.terminate()
        server.wait(timeout=30)
    base, strategies = statistics.median(alone.latency["/attention"]), heavy.latency["/strategies"]
    during = light.latency["/attention"]
    print(f"\nre-plots during heavy work: /attention p50 {percentile(during, 50) * 1000:.0f} ms, "
          f"p95 {percentile(during, 95) * 1000:.0f} ms ({percentile(during, 50) / base:.1f}x alone), while "
          f"/strategies (32 tokens, 8 samples, 4 beams) took p50 {percentile(strategies, 50) * 1000:.0f} ms "
          f"in 4 sessions; {load_average()}")  # fmt: skip
    fine = [users for users, p95 in replot_p95.items() if p95 < REPLOT_GOAL]
    print(
        "re-plot p95 by class size: "
        + ", ".join(f"{u} users {p * 1000:.0f} ms" for u, p in replot_p95.items())
        + f"; largest class with re-plots under {REPLOT_GOAL:g} s p95: {max(fine) if fine else 'none tested'}"
    )
    print(f"errors in all: {len(errors)}")
    print(
        f"server memory: {idle_rss / 2**20:,.0f} MB after start, peak {memory.peak / 2**20:,.0f} MB; {load_average()}"
    )
    print("The machine is shared with other work: these figures are noisy; compare runs on the same load only.")


if __name__ == "__main__":
    main()
