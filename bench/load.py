"""A classroom at once: 30 simulated students on one app, each doing a realistic session.

Starts the app (``app.py``, bundled models) on loopback at a free port in a subprocess, then:
1. baseline: one user alone runs the session once (per-endpoint latency with no contention), then re-plots
   60 times in a row: the CPU time one re-plot costs the server and the client (little affected by other load);
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

Where a request's time goes: the server is ``explorer.ui.timings`` (the app, each queued event's timings
written down), so each endpoint's row also shows, at p95, the client's request to join gradio's queue
(``join``), the wait in the queue, the handler (and its thread's CPU time), the rest of the event (reading
inputs, writing the figure) and the answer's way back (``back``); below it, how many server threads were
runnable at once (sampled from ``/proc``), the CPUs the server used and the torch threads each handler ran with.

``--compare`` runs the same classes against two servers in turn, "before" and "after" a fix (``COMPARISONS``),
``--repeats`` times interleaved, and prints every run's p50/p95 with the load average, then the ratio
after/before of the p95s. ``--compare replots`` (the default): re-plots through gradio's queue
(``EXPLORER_UNQUEUED_REPLOTS=0``) against re-plots as one HTTP request each (``1``, the default setting).
``--compare threads``: the defaults against one torch thread per model run and one long model run at once
(``EXPLORER_TORCH_THREADS=1``, ``EXPLORER_MODEL_RUNS=1``; it did not help where it was measured: docs/scaling.md).

An endpoint the app serves outside gradio's queue (``queue=False``) is called as the browser calls it, one POST
to ``/gradio_api/run/<name>`` in the simulated user's session (gradio_client would join the queue with it).

    python bench/load.py [--users 30] [--rounds 1] [--think 1.0] [--arrival 10] [--real] [--compare [replots|threads]]
                         [--no-heavy]

Client-side HTTP timeouts are 120 s: a slow answer counts as latency; an error is a failed or ⚠️ answer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
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
# --compare NAME: (before, after) server environments
COMPARISONS = {
    "replots": ({"EXPLORER_UNQUEUED_REPLOTS": "0"}, {"EXPLORER_UNQUEUED_REPLOTS": "1"}),
    "threads": ({"EXPLORER_TORCH_THREADS": "0", "EXPLORER_MODEL_RUNS": "2"},
                {"EXPLORER_TORCH_THREADS": "1", "EXPLORER_MODEL_RUNS": "1"}),
}  # fmt: skip
KNOBS = (0, 1.0, 0.0, 1.0, False)  # top-k, top-p, min-p, repetition penalty, greedy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, timings: Path, **variables: str) -> subprocess.Popen:
    """The app (as ``app.py`` builds it) in a subprocess, each event's timings written to ``timings``
    (``explorer.ui.timings``), with ``variables`` in its environment."""
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    env.update(variables)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return subprocess.Popen(
        [sys.executable, "-m", "explorer.ui.timings", str(timings)], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
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


class ServerThreads(threading.Thread):
    """Samples the server's threads every 0.1 s: how many are runnable at once, and each one's CPU time."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.done = pid, threading.Event()
        self.runnable: list[int] = []
        self.cpu: dict[int, float] = {}  # thread id -> CPU seconds so far

    def run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self.done.is_set():
            running = 0
            for task in Path(f"/proc/{self.pid}/task").glob("*"):
                try:
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                running += fields[0] == "R"
                self.cpu[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
            self.runnable.append(running)
            time.sleep(0.1)

    def mark(self) -> tuple[int, dict[int, float]]:
        return len(self.runnable), dict(self.cpu)

    def since(self, mark: tuple[int, dict[int, float]], wall: float) -> str:
        """Runnable threads (mean, 95th percentile), the CPUs the server used, threads that did any work."""
        start, before = mark
        runnable = self.runnable[start:] or [0]
        used = {tid: cpu - before.get(tid, 0.0) for tid, cpu in self.cpu.items()}
        busy = sum(1 for v in used.values() if v > 0.05)
        return (f"server threads runnable at once: mean {statistics.mean(runnable):.1f}, p95 "
                f"{percentile(runnable, 95):.0f} (on {os.cpu_count()} CPUs); server CPU {sum(used.values()):.0f} s "
                f"in {wall:.0f} s ({sum(used.values()) / wall:.2f} CPUs); {busy} threads did work")  # fmt: skip


class Recorder:
    def __init__(self, think: float = 0.0):
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.messages: list[str] = []  # the app's own one-sentence answers to a request it cannot serve
        self.lock = threading.Lock()
        self.think = think
        self.calls: list[tuple[str, str, float, float]] = []  # (session, endpoint, sent, answered): wall clock

    def call(self, client: Client, endpoint: str, *args):
        if self.think:
            time.sleep(random.uniform(0.5, 1.5) * self.think)  # a student reads the last answer
        t0, sent = time.perf_counter(), time.time()
        try:
            result = predict(client, endpoint, *args)
        except Exception as err:  # every failure counts, whatever its kind
            with self.lock:
                self.errors.append(f"{endpoint}: {type(err).__name__}: {err}"[:300])
            return None
        elapsed = time.perf_counter() - t0
        shown = str(result)
        with self.lock:
            self.latency[endpoint].append(elapsed)
            self.calls.append((client.session_hash, endpoint, sent, time.time()))
            if "⚠️" in shown:
                self.messages.append(f"{endpoint}: {shown[:160]}")
        return result


def unqueued(client: Client, endpoint: str) -> int | None:
    """The function index of ``endpoint`` when the app serves it outside gradio's queue (``queue=False``), else None."""
    fn_index = client._infer_fn_index(endpoint, None)
    dependency = next(d for i, d in enumerate(client.config["dependencies"]) if d.get("id", i) == fn_index)
    return fn_index if dependency.get("queue") is False else None


def predict(client: Client, endpoint: str, *args):
    """What the browser does: an unqueued event is one POST to ``/gradio_api/run/<name>`` (gradio_client would
    join the queue with it anyway), in the session of ``client``; any other event goes through gradio_client."""
    fn_index = unqueued(client, endpoint)
    if fn_index is None:
        return client.predict(*args, api_name=endpoint)
    http = getattr(client, "bench_http", None)
    if http is None:  # one connection per simulated browser, kept alive as a browser keeps it
        http = client.bench_http = httpx.Client(timeout=120)
    data = client.endpoints[fn_index].insert_empty_state(*args)
    body = {"data": list(data), "fn_index": fn_index, "session_hash": client.session_hash, "event_data": None}
    answer = http.post(f"{client.src_prefixed}run{endpoint}", json=body)
    payload = answer.json()
    if answer.status_code != 200:
        raise RuntimeError(f"HTTP {answer.status_code}: {payload.get('error') or payload}")
    return payload["data"]


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


def replot_cost(url: str, pid: int, replots: int = 60) -> dict:
    """One session alone re-plotting ``replots`` times in a row: wall p50, and the CPU time each re-plot cost the
    server process (all its threads) and this client. CPU time is what a class shares: it hardly depends on
    the machine's other load, where the wall time does."""
    client = Client(url, verbose=False, httpx_kwargs={"timeout": 120})
    predict(client, "/analyze", MODELS[0], TEXTS[0], "")
    predict(client, "/attention", "self", 0, 0, "weights")  # the first figure of the trace
    server, me = psutil.Process(pid), psutil.Process()
    server_cpu, my_cpu, walls = sum(server.cpu_times()[:2]), sum(me.cpu_times()[:2]), []
    for i in range(replots):
        t0 = time.perf_counter()
        predict(client, "/attention", "self", i % 4, (i // 4) % 4, "weights")
        walls.append(time.perf_counter() - t0)
    return {
        "wall": percentile(walls, 50),
        "server_cpu": (sum(server.cpu_times()[:2]) - server_cpu) / replots,
        "client_cpu": (sum(me.cpu_times()[:2]) - my_cpu) / replots,
    }


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


def read_timings(path: Path, offset: int) -> tuple[list[dict], int]:
    """The server's event rows written after ``offset`` (bytes), and the new offset."""
    with open(path) as f:
        f.seek(offset)
        text = f.read()
    return [json.loads(line) for line in text.splitlines() if line.strip()], offset + len(text.encode())


def ms(values: list[float], q: int) -> str:
    return f"{percentile(values, q) * 1000:.0f}" if values else "-"


def report(users: int, args, loaded: Recorder, alone: Recorder, wall: float, rows: list[dict], threads: str) -> dict:
    """Print one class size's table: round trip, and where the server spent it (its wait in gradio's queue,
    the handler, the rest of the event: reading inputs and writing the figure). Returns the figures."""
    requests = sum(len(v) for v in loaded.latency.values()) + len(loaded.errors)
    print(f"\n{users} users x {args.rounds} session(s), think {args.think:g} s, arrival within {args.arrival:g} s: "
          f"{requests} requests in {wall:.1f} s ({requests / wall:.1f} requests/s); {os.cpu_count()} CPUs, "
          f"{load_average()} (other work on the machine counts)")  # fmt: skip
    print(f"{'endpoint':<14}{'calls':>6}{'alone p50':>10}{'p50':>7}{'p95':>7}{'p50/alone':>10}{'join p95':>9}"
          f"{'queue p50/p95':>15}{'handler p50/p95':>17}{'cpu p50':>8}{'rest p95':>9}{'back p95':>9}  (ms)")  # fmt: skip
    by_endpoint, by_session, join, back = defaultdict(list), defaultdict(list), defaultdict(list), defaultdict(list)
    for row in rows:
        by_endpoint[row["endpoint"]].append(row)
        by_session[row.get("session"), row["endpoint"]].append(row)
    for session_hash, endpoint, sent, answered in loaded.calls:  # the server's row of each call: same session
        for row in by_session.get((session_hash, endpoint), []):
            if sent - 0.05 <= row["joined"] <= answered:
                join[endpoint].append(row["joined"] - sent)  # the request to join the queue
                back[endpoint].append(answered - row["done"])  # the answer's way back to the client
    for endpoint, times in loaded.latency.items():
        base = statistics.median(alone.latency[endpoint]) if alone.latency.get(endpoint) else float("nan")
        server = by_endpoint.get(endpoint, [])
        queue = [r["queue"] for r in server]
        handler = [r["handler"] for r in server if "handler" in r]
        cpu = [r["cpu"] for r in server if "cpu" in r]
        rest = [r["event"] - r["handler"] for r in server if "handler" in r]
        print(
            f"{endpoint:<14}{len(times):>6}{base * 1000:>10.0f}{ms(times, 50):>7}{ms(times, 95):>7}"
            f"{percentile(times, 50) / base:>10.1f}{ms(join[endpoint], 95):>9}{ms(queue, 50) + ' / ' + ms(queue, 95):>15}"
            f"{ms(handler, 50) + ' / ' + ms(handler, 95):>17}{ms(cpu, 50):>8}{ms(rest, 95):>9}{ms(back[endpoint], 95):>9}"
        )
    misses = [r["misses"] for r in rows]
    torch_threads = sorted({r["torch_threads"] for r in rows if "torch_threads" in r})
    print(f"  {threads}; torch threads per handler: {torch_threads}; model runs for traces (run cache misses): "
          f"{max(misses) - min(misses) if misses else 0}")  # fmt: skip
    print(f"errors: {len(loaded.errors)}; the app's own ⚠️ answers: {len(loaded.messages)}")
    for err in loaded.errors[:10] + sorted(set(loaded.messages))[:5]:
        print("  ", err)
    return {
        "users": users,
        "load": os.getloadavg()[0],
        "errors": len(loaded.errors),
        **{f"{e} p95": percentile(t, 95) for e, t in loaded.latency.items()},
        **{f"{e} p50": percentile(t, 50) for e, t in loaded.latency.items()},
    }


def measure(args, classes: list[int], variables: dict[str, str], label: str) -> dict:
    """One server (with ``variables`` in its environment): alone, each class size, re-plots beside heavy work."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    timings = Path(tempfile.gettempdir()) / f"load-timings-{os.getpid()}-{port}.jsonl"
    timings.write_text("")
    server = start_server(port, timings, **variables)
    results, errors = {"label": label, "classes": {}}, []
    try:
        wait_until_up(url, server)
        memory, threads = PeakMemory(server.pid), ServerThreads(server.pid)
        memory.start()
        threads.start()
        idle_rss = psutil.Process(server.pid).memory_info().rss
        alone = Recorder()
        run_users(url, 1, 1, alone)  # warm-up: loads the models, compiles nothing twice
        _, offset = read_timings(timings, 0)
        alone = Recorder()
        run_users(url, 1, 2, alone)
        errors += alone.errors
        rows, offset = read_timings(timings, offset)
        print(f"\n== {label}: {', '.join(f'{k}={v}' for k, v in variables.items()) or 'defaults'}; {load_average()}")
        print("alone (p50 ms): " + ", ".join(f"{e} {ms(t, 50)}" for e, t in alone.latency.items()))
        results["alone"] = {e: percentile(t, 50) for e, t in alone.latency.items()}
        cost = results["replot"] = replot_cost(url, server.pid)
        _, offset = read_timings(timings, offset)
        print(f"one re-plot alone, 60 in a row: p50 {cost['wall'] * 1000:.0f} ms; CPU per re-plot: server "
              f"{cost['server_cpu'] * 1000:.1f} ms, this client {cost['client_cpu'] * 1000:.1f} ms")  # fmt: skip
        for users in classes:
            loaded, mark, mine = Recorder(args.think), threads.mark(), sum(psutil.Process().cpu_times()[:2])
            wall = run_users(url, users, args.rounds, loaded, args.arrival)
            rows, offset = read_timings(timings, offset)
            mine = sum(psutil.Process().cpu_times()[:2]) - mine
            seen = f"{threads.since(mark, wall)}; the simulated browsers (this process) used {mine / wall:.2f} CPUs"
            results["classes"][users] = report(users, args, loaded, alone, wall, rows, seen)
            errors += loaded.errors
        if args.heavy:
            heavy, light = replots_during_heavy_work(url)
            errors += heavy.errors + light.errors
            base, strategies = statistics.median(alone.latency["/attention"]), heavy.latency["/strategies"]
            during = light.latency["/attention"]
            print(f"re-plots during heavy work: /attention p50 {ms(during, 50)} ms, p95 {ms(during, 95)} ms "
                  f"({percentile(during, 50) / base:.1f}x alone), while /strategies (32 tokens, 8 samples, 4 beams) "
                  f"took p50 {ms(strategies, 50)} ms in 4 sessions; {load_average()}")  # fmt: skip
        memory.done.set()
        threads.done.set()
        memory.join()
    finally:
        server.terminate()
        server.wait(timeout=30)
        timings.unlink(missing_ok=True)
    results.update(errors=len(errors), idle_mb=idle_rss / 2**20, peak_mb=memory.peak / 2**20)
    print(f"errors in all: {len(errors)}; server memory: {idle_rss / 2**20:,.0f} MB after start, "
          f"peak {memory.peak / 2**20:,.0f} MB; {load_average()}")  # fmt: skip
    return results


def largest_fine(result: dict) -> str:
    fine = [u for u, c in result["classes"].items() if c.get("/attention p95", float("inf")) < REPLOT_GOAL]
    return str(max(fine)) if fine else "none tested"


def compare_table(results: list[dict], classes: list[int]) -> None:
    """Every run side by side, then per class size the ratio after/before of the p95s (median over the pairs)."""
    endpoints = ["/attention", "/analyze", "/next_token", "/step_next", "/strategies"]
    print("\n== before / after, each run (p50 / p95 in ms; load: the 1-minute load average at the class's end)")
    print(f"{'run':<10}{'users':>6}" + "".join(f"{e:>17}" for e in endpoints) + f"{'errors':>8}{'load':>6}")
    for result in results:
        for users in classes:
            c = result["classes"][users]
            cells = "".join(f"{c[e + ' p50'] * 1000:>8.0f} /{c[e + ' p95'] * 1000:>6.0f}  " for e in endpoints)
            print(f"{result['label']:<10}{users:>6}{cells}{c['errors']:>6}{c['load']:>6.1f}")
    print("\nratio after / before of p95 (median of the pairs; below 1: the fix is faster)")
    for users in classes:
        pairs = [(b["classes"][users], a["classes"][users]) for b, a in zip(results[::2], results[1::2], strict=True)]
        ratios = "  ".join(
            f"{e} {statistics.median(a[e + ' p95'] / b[e + ' p95'] for b, a in pairs):.2f}" for e in endpoints
        )
        print(f"{users:>3} users: {ratios}")
    for side in ("before", "after"):
        runs = [r for r in results if r["label"].startswith(side)]
        alone = {e: ", ".join(f"{r['alone'][e] * 1000:.0f}" for r in runs) for e in ("/attention", "/analyze")}
        peaks = ", ".join(f"{r['peak_mb']:,.0f}" for r in runs)
        cost = "; ".join(f"p50 {r['replot']['wall'] * 1000:.0f} ms, server CPU {r['replot']['server_cpu'] * 1000:.1f} "
                         f"ms, client CPU {r['replot']['client_cpu'] * 1000:.1f} ms" for r in runs)  # fmt: skip
        print(f"largest class with re-plots under {REPLOT_GOAL:g} s p95, {side}: "
              f"{', '.join(largest_fine(r) for r in runs)}; alone p50 /attention {alone['/attention']} ms, "
              f"/analyze {alone['/analyze']} ms; peak memory {peaks} MB; one re-plot alone: {cost}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="30", help="simulated users; a list (10,30) runs each in turn")
    parser.add_argument("--rounds", type=int, default=1, help="sessions per user")
    parser.add_argument("--think", type=float, default=1.0, help="mean seconds between a user's requests")
    parser.add_argument("--arrival", type=float, default=10.0, help="users arrive within this many seconds")
    parser.add_argument("--real", action="store_true", help="GPT-2-small- and BERT-base-shaped models")
    parser.add_argument("--no-heavy", dest="heavy", action="store_false", help="skip re-plots beside heavy work")
    parser.add_argument("--compare", nargs="?", const="replots", choices=sorted(COMPARISONS),
                        help="before and after a fix, interleaved (default: replots)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=2, help="--compare: runs of each side")
    args = parser.parse_args()
    classes = [int(n) for n in str(args.users).split(",")]
    if args.real:
        use_real_size_models()
    print(f"models: {', '.join(sorted(set(MODELS)))}")
    if args.compare:
        before, after = COMPARISONS[args.compare]
        results = []
        for k in range(args.repeats):  # interleaved: before, after, before, after (the machine's load drifts)
            results.append(measure(args, classes, before, f"before {k + 1}"))
            results.append(measure(args, classes, after, f"after {k + 1}"))
        compare_table(results, classes)
        return
    result = measure(args, classes, {}, "as configured")
    print(
        "re-plot p95 by class size: "
        + ", ".join(f"{u} users {c['/attention p95'] * 1000:.0f} ms" for u, c in result["classes"].items())
        + f"; largest class with re-plots under {REPLOT_GOAL:g} s p95: {largest_fine(result)}"
    )
    print("The machine is shared with other work: these figures are noisy; compare runs on the same load only.")


if __name__ == "__main__":
    main()
