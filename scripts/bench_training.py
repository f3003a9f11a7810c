#!/usr/bin/env python3
"""Steady training seconds per epoch of the eight models, each trained by its backend's own ``train()``.

Every model runs in its own subprocess with its service's virtualenv (TensorFlow and PyTorch never share a process;
the jax service's models run in the jax venv), one after the other (never in parallel), with the default TrainConfig
(batch 128, Adam 1e-3, seed 42) on the full 54,000-image training split, and with the thread settings of the
services in production: servekit's Settings (INTRA_OP_THREADS, else the CPU limit per worker; INTER_OP_THREADS, else
1), set as each app.py sets them (XLA, which has no thread setting, through the CPU affinity:
services/jax/threads.py), and the environment servekit.gunicorn_settings gives a trainer (OMP_WAIT_POLICY;
ROLE=trainer unless $ROLE says otherwise). The first epoch is warm-up (tracing, allocator, caches); the steady
figure is the mean of the others. An epoch is timed as the backend reports it, from ``begin_epoch`` to ``end_epoch``
(the validation pass included, in every framework); ``train s`` is the part up to the epoch's last step. ``others``
is the CPU other processes used meanwhile, in cores: on a shared machine a figure with others well above 0 is
disturbed. ``--repeat N`` trains every model N times, in alternating order, and reports the best run (and the
median); ``--quiet-below`` waits for a quiet machine before each model; ``--source DIR`` times other backend files
(DIR/<service>/backend.py), e.g. a copy of the code before a change.

    .venvs/dev/bin/python scripts/bench_training.py [--models torch,tf-native] [--epochs 3] [--train-limit N]
        [--repeat N] [--quiet-below 0.3] [--out bench.json]

The figures of one run are comparable with each other; across runs (and on a shared machine) compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {  # model -> (service folder, backend class)
    "keras-sequential": ("keras", "SequentialBackend"),
    "keras-functional": ("keras", "FunctionalBackend"),
    "torch": ("torch", "TorchBackend"),
    "keras-torch": ("torch", "KerasTorchBackend"),
    "tf-native": ("tf", "NativeBackend"),
    "tf-hybrid": ("tf", "HybridBackend"),
    "flax": ("jax", "FlaxBackend"),
    "keras-jax": ("jax", "KerasJaxBackend"),
}
RUNTIMES = {"torch": "torch", "jax": "jax"}  # service -> the runtime whose threads it sets (else TensorFlow)
RESULT_MARK = "BENCH_RESULT "


# --- the worker: runs inside the service's virtualenv -------------------------------------------------------


def page_faults() -> tuple[int, int]:
    """This process's (minor, major) page faults so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, usage.ru_majflt


class TimedProgress:
    """A Progress that timestamps each epoch's begin, last step and end (and counts its page faults)."""

    def __init__(self):
        self.epochs: list[dict] = []

    def begin_epoch(self, epoch: int, steps_per_epoch: int) -> None:
        self.epochs.append({"epoch": epoch, "steps": steps_per_epoch, "begin": time.perf_counter(), "calls": 0,
                            "faults": page_faults()})

    def step(self, step: int, loss: float, accuracy: float) -> None:
        current = self.epochs[-1]
        current.update(last_step=time.perf_counter(), calls=current["calls"] + 1, loss=loss, accuracy=accuracy)

    def end_epoch(self, record) -> None:
        current = self.epochs[-1]
        minor, major = page_faults()
        current.update(end=time.perf_counter(), record=record.to_dict(),
                       minor_faults=minor - current["faults"][0], major_faults=major - current["faults"][1])


def set_threads(framework: str, settings) -> dict:
    """The thread counts each service's app.py sets, before the framework starts its runtime."""
    if framework == "torch":
        import torch

        torch.set_num_threads(settings.intra_op_threads)
        torch.set_num_interop_threads(settings.inter_op_threads)
        return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads(),
                "version": torch.__version__}
    if framework == "jax":
        from threads import before_jax_starts  # the jax service's own: CPU affinity (and malloc) before JAX starts

        threads = before_jax_starts(settings)
        import jax

        return {"intra_op": threads["intra_op"], "inter_op": None, "version": jax.__version__,
                "xla_flags": threads["xla_flags"]}
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(settings.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(settings.inter_op_threads)
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(), "version": tf.__version__}


def worker(model: str, epochs: int, train_limit: int | None, source: Path) -> dict:
    """Train ``model`` once and return its per-epoch timings (this process runs in the service's venv)."""
    service, class_name = MODELS[model]
    sys.path.insert(0, str(source / service))
    import servekit.gunicorn_settings  # noqa: F401  (the environment the services' gunicorn sets: OMP_WAIT_POLICY)
    from servekit.backend import TrainConfig, TrainingData
    from servekit.mnist import load_mnist, to_model_input
    from servekit.settings import Settings

    settings = Settings.from_env()
    threads = set_threads(RUNTIMES.get(service, "tensorflow"), settings)
    threads["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY")
    import backend as backend_module  # after the threads are set, as app.py does

    mnist = load_mnist(os.environ["MNIST_DIR"], mirrors=())
    config = TrainConfig(epochs=epochs, train_limit=train_limit)
    data = TrainingData(mnist.train.head(train_limit), mnist.validation, mnist.folder)
    backend = getattr(backend_module, class_name)()
    progress = TimedProgress()
    started = time.perf_counter()
    backend.train(data, config, progress)
    total = time.perf_counter() - started
    test = backend.evaluate(to_model_input(mnist.test.images), mnist.test.labels)
    rows = []
    for entry in progress.epochs:
        if entry["calls"] != entry["steps"]:
            raise RuntimeError(f"{model}: epoch {entry['epoch']} reported {entry['calls']} of {entry['steps']} steps")
        rows.append({
            "epoch": entry["epoch"],
            "seconds": entry["end"] - entry["begin"],
            "train_seconds": entry["last_step"] - entry["begin"],
            "minor_faults": entry["minor_faults"],
            "major_faults": entry["major_faults"],
            "record": entry["record"],
        })
    return {
        "model": model, "service": service, "threads": threads, "train_samples": len(data.train),
        "backend_source": str(source / service / "backend.py"),
        "epochs": rows, "train_call_seconds": total,
        "test_accuracy": test.accuracy, "test_loss": test.loss,
    }


# --- the driver: runs anywhere, starts one worker per model --------------------------------------------------


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat), or None where there is none."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_quiet(limit: float, timeout: float) -> float | None:
    """Wait (up to ``timeout`` s) until the machine is busy with less than ``limit`` cores over 2 s; return that."""
    deadline = time.monotonic() + timeout
    while True:
        before = busy_cpu_seconds()
        time.sleep(2.0)
        after = busy_cpu_seconds()
        if before is None or after is None:
            return None
        busy = (after - before) / 2.0
        if busy < limit or time.monotonic() > deadline:
            return busy
        print(f"  waiting: the machine is busy with {busy:.2f} cores of other work", file=sys.stderr, flush=True)


def run_model(model: str, args: argparse.Namespace) -> dict:
    service = MODELS[model][0]
    python = ROOT / ".venvs" / service / "bin" / "python"
    command = [str(python), str(Path(__file__).resolve()), "--worker", model, "--epochs", str(args.epochs),
               "--source", str(args.source)]
    if args.train_limit:
        command += ["--train-limit", str(args.train_limit)]
    env = {**os.environ, "MNIST_DIR": str(args.mnist_dir), "ROLE": os.environ.get("ROLE", "trainer"),
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    busy, own, started = busy_cpu_seconds(), children_cpu_seconds(), time.monotonic()
    completed = subprocess.run(command, cwd=ROOT / "services" / service, env=env, capture_output=True, text=True)
    wall, busy_after = time.monotonic() - started, busy_cpu_seconds()
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK):])
            result["own_cpu_cores"] = (children_cpu_seconds() - own) / wall
            # What else ran meanwhile (other users' tests): the machine's busy time less the worker's own.
            if busy is not None and busy_after is not None:
                result["other_cpu_cores"] = max(0.0, (busy_after - busy) / wall - result["own_cpu_cores"])
            return result
    sys.stderr.write(completed.stdout[-4000:] + completed.stderr[-4000:])
    raise RuntimeError(f"{model}: the worker exited {completed.returncode} without a result")


def summarize(result: dict) -> dict:
    epochs = result["epochs"]
    steady = epochs[1:] or epochs  # one epoch only: no warm-up to leave out
    result["steady_s_per_epoch"] = sum(e["seconds"] for e in steady) / len(steady)
    result["steady_train_s_per_epoch"] = sum(e["train_seconds"] for e in steady) / len(steady)
    result["warmup_s"] = epochs[0]["seconds"]
    return result


def combine(runs: list[dict]) -> dict:
    """One model's runs: the best (least disturbed) steady figure, the median, and the run the best came from."""
    best = min(runs, key=lambda r: r["steady_s_per_epoch"])
    values = sorted(r["steady_s_per_epoch"] for r in runs)
    middle = len(values) // 2
    median = values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
    return {**best, "median_s_per_epoch": median, "all_s_per_epoch": [r["steady_s_per_epoch"] for r in runs],
            "runs": runs}


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, from: " + ", ".join(MODELS))
    parser.add_argument("--epochs", type=int, default=3, help="the first is warm-up (default 3)")
    parser.add_argument("--train-limit", type=int, default=None, help="train on the first N images only")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--mnist-dir", type=Path,
                        default=Path(os.environ.get("MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist")))
    parser.add_argument("--source", type=Path, default=ROOT / "services",
                        help="folder with <service>/backend.py to time (default: this checkout's services)")
    parser.add_argument("--quiet-below", type=float, default=None, metavar="CORES",
                        help="before each model, wait until other work uses fewer cores than this (shared machines)")
    parser.add_argument("--quiet-timeout", type=float, default=600.0, help="longest wait for --quiet-below (s)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="train every model this many times (rounds alternate the order); report the best run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = worker(args.worker, args.epochs, args.train_limit, args.source.resolve())
        print(RESULT_MARK + json.dumps(result), flush=True)
        return 0

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    args.source, args.mnist_dir = args.source.resolve(), args.mnist_dir.resolve()
    run = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "epochs": args.epochs, "repeat": args.repeat,
           "train_limit": args.train_limit, "host": platform.node(), "cpus": os.cpu_count(),
           "load_before": load_average(), "models": {}}
    runs: dict[str, list[dict]] = {model: [] for model in models}
    for round_ in range(args.repeat):
        # Every other round in reverse order, so that a drifting machine favours no model (A B C, C B A, ...).
        for model in models if round_ % 2 == 0 else models[::-1]:
            if args.quiet_below is not None:
                wait_for_quiet(args.quiet_below, args.quiet_timeout)
            print(f"{model}: training {args.epochs} epoch(s)... (load {load_average()})", file=sys.stderr, flush=True)
            result = summarize(run_model(model, args))
            result["load_after"] = load_average()
            runs[model].append(result)
            print(f"{model}: " + ", ".join(f"{e['seconds']:.2f}" for e in result["epochs"]) + " s/epoch (validation "
                  + ", ".join(f"{e['seconds'] - e['train_seconds']:.2f}" for e in result["epochs"]) + " s; page faults "
                  + ", ".join(f"{e['minor_faults']}+{e['major_faults']} major" for e in result["epochs"])
                  + f"; others {result.get('other_cpu_cores', float('nan')):.2f} cores)", file=sys.stderr, flush=True)
    run["models"] = {model: combine(runs[model]) for model in models}
    run["load_after"] = load_average()

    fastest = min(r["steady_s_per_epoch"] for r in run["models"].values())
    fastest_median = min(r["median_s_per_epoch"] for r in run["models"].values())
    for result in run["models"].values():
        result["ratio_to_fastest"] = result["steady_s_per_epoch"] / fastest
        result["median_ratio_to_fastest"] = result["median_s_per_epoch"] / fastest_median
    header = (f"{'model':<18} {'s/epoch':>8} {'ratio':>6} {'train s':>8} {'warm-up s':>9} {'val acc':>8} "
              f"{'test acc':>8} {'others':>6}")
    if args.repeat > 1:
        header += f" {'median':>7} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for model, r in run["models"].items():
        line = (f"{model:<18} {r['steady_s_per_epoch']:>8.2f} {r['ratio_to_fastest']:>6.2f} "
                f"{r['steady_train_s_per_epoch']:>8.2f} {r['warmup_s']:>9.2f} "
                f"{r['epochs'][-1]['record']['val_accuracy']:>8.4f} {r['test_accuracy']:>8.4f} "
                f"{r.get('other_cpu_cores', float('nan')):>6.2f}")
        if args.repeat > 1:
            line += f" {r['median_s_per_epoch']:>7.2f} {r['median_ratio_to_fastest']:>6.2f}"
        print(line)
    threads = {(r["threads"]["intra_op"], r["threads"]["inter_op"], r["threads"]["OMP_WAIT_POLICY"])
               for r in run["models"].values()}
    print(f"threads (intra, inter, OMP_WAIT_POLICY): {', '.join(sorted(map(str, threads)))}; "
          f"load average before {run['load_before']}, after {run['load_after']}")
    print("others: cores busy with other processes during the model's run (a disturbed figure: rerun it)"
          + (f"; s/epoch is the best of {args.repeat} runs, median the median" if args.repeat > 1 else ""))
    if args.out:
        args.out.write_text(json.dumps(run, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
