"""How calls are timed: one CUDA-event timer, one CPU timer, and the two ways of taking samples.

A timer has ``kind`` (a word for the JSON) and ``time(fn) -> seconds``, the
time of one call of ``fn()``. :func:`run_rounds` takes one sample per call and
interleaves many stages (the benchmark sweep); :func:`time_per_call` groups
calls so that each sample lasts long enough for short kernels (the
bias-gradient device check). Both accept any timer, so they run on a CPU too.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, ContextManager


class CpuTimer:
    """Times a call with ``time.perf_counter``.

    Example:
        >>> import time
        >>> 0.01 <= CpuTimer().time(lambda: time.sleep(0.01)) < 5  # seconds, not ms or ns
        True
    """

    kind = "perf_counter"

    def time(self, fn: Callable[[], Any]) -> float:
        """Seconds that ``fn()`` takes."""
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


class CudaTimer:
    """Times a call with two CUDA events on the current stream.

    Args:
        xp: The CuPy module, as the CuPy backend gives it (``backend.xp``).

    Example:
        >>> timer = CudaTimer(get_backend("cupy").xp)  # doctest: +SKIP
        >>> timer.time(lambda: a.sum())  # doctest: +SKIP
    """

    kind = "cuda-events"

    def __init__(self, xp: Any) -> None:
        self.xp = xp
        self.start = xp.cuda.Event()
        self.end = xp.cuda.Event()

    def time(self, fn: Callable[[], Any]) -> float:
        """Seconds between events recorded before and after the work ``fn()`` queues."""
        cuda = self.xp.cuda
        stream = cuda.get_current_stream()
        self.start.record(stream)
        fn()
        self.end.record(stream)
        self.end.synchronize()
        return cuda.get_elapsed_time(self.start, self.end) / 1e3


def timer_for(backend: Any) -> CpuTimer | CudaTimer:
    """The timer of a backend: CUDA events for CuPy, ``perf_counter`` otherwise."""
    return CudaTimer(backend.xp) if backend.name == "cupy" else CpuTimer()


def split_repeats(repeats: int, rounds: int) -> list[int]:
    """Spread ``repeats`` timed calls over ``rounds`` rounds as evenly as possible.

    Example:
        >>> split_repeats(10, 4)
        [3, 3, 2, 2]
    """
    if repeats < 1 or rounds < 1:
        raise ValueError(f"repeats and rounds must be >= 1; got {repeats} and {rounds}")
    rounds = min(rounds, repeats)
    base, extra = divmod(repeats, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def calls_of(n_fns: int, *, repeats: int, warmup: int, rounds: int = 4) -> int:
    """How many calls :func:`run_rounds` makes for ``n_fns`` stages: timed and warm-up.

    Example:
        >>> calls_of(2, repeats=10, warmup=1)  # 10 timed + 1 warm-up per round (4 rounds), per stage
        28
    """
    return n_fns * (repeats + warmup * len(split_repeats(repeats, rounds)))


def run_rounds(fns: dict[str, Callable[[int], Any]], *, n_sets: int, repeats: int, warmup: int,
               timer: Any, nvtx: Callable[[str], ContextManager[Any]], rounds: int = 4,
               on_call: Callable[[], None] | None = None, min_warmup_s: float = 0.0,
               alternate: bool = False, settle: Callable[[], Any] | None = None) -> dict[str, list[float]]:
    """Time every ``fns[name](set_index)``; return its samples in seconds, per name.

    The repeats are split into ``rounds``; in each round every stage runs in
    turn as one block: ``warmup`` untimed calls (and more until they have
    lasted ``min_warmup_s``), then its share of timed calls. Blocks keep one
    library's idle worker threads (OpenBLAS, OpenMP spin a while after a
    call) from running into the next stage's timed call, and rounds spread
    every stage over the whole run, so a slow phase of a shared machine hits
    all of them alike. Timed call ``i`` uses input set ``i % n_sets``;
    sample ``i`` of two stages comes from the same round.

    Args:
        fns: stage name -> a call on input set ``k``.
        n_sets: How many input sets the calls rotate through.
        repeats, warmup: Timed and untimed calls per stage (over all rounds,
            and per round).
        timer: A :class:`CpuTimer`, :class:`CudaTimer` or alike.
        nvtx: ``nvtx(name)`` is a context manager around each timed block
            (the backend's ``nvtx_range``).
        rounds: How many rounds to split the repeats into.
        on_call: Called after every timed call and each of the ``warmup``
            warm-up calls (outside the timed region), e.g. to move a progress
            bar; :func:`calls_of` counts them. The calls that stretch a
            warm-up to ``min_warmup_s`` are not counted.
        min_warmup_s: The least wall time, in seconds, the warm-up of each
            block lasts (at least ``warmup`` calls all the same).
        alternate: Run the stages in reverse order in every other round, so
            that no stage always follows the same one.
        settle: Called before every block, e.g. a
            :class:`~gpudense.benchmark.isolation.SpinDown` that waits for the
            previous block's worker threads to go idle.

    Returns:
        name -> ``repeats`` samples in seconds.

    Example:
        >>> run_rounds({"sum": lambda k: sum(range(100))}, n_sets=1, repeats=3, warmup=0,
        ...            timer=CpuTimer(), nvtx=lambda name: contextlib.nullcontext())  # doctest: +SKIP
    """
    samples: dict[str, list[float]] = {name: [] for name in fns}
    tick = on_call or (lambda: None)
    done = 0
    names = list(fns)
    for r, share in enumerate(split_repeats(repeats, rounds)):
        for name in (names[::-1] if alternate and r % 2 else names):
            fn = fns[name]
            if settle is not None:
                settle()
            warm, until = 0, time.perf_counter() + min_warmup_s
            while warm < warmup or (min_warmup_s > 0 and time.perf_counter() < until):
                fn((done + warm) % n_sets)
                if warm < warmup:
                    tick()
                warm += 1
            with nvtx(f"bench.{name}"):
                for i in range(done, done + share):
                    k = i % n_sets
                    samples[name].append(timer.time(lambda: fn(k)))
                    tick()
        done += share
    return samples


def time_per_call(fn: Callable[[int], Any], timer: Any, *, warmup: int = 5, repeat: int = 25,
                  min_sample_s: float = 5e-4, max_inner: int = 200) -> list[float]:
    """Seconds per call of ``fn(i)``, each sample timed over enough calls to last ``min_sample_s``.

    ``fn`` gets a running call index (use it to rotate input buffers). After
    ``warmup`` calls, one timed call sets how many calls each sample holds
    (``inner``, at most ``max_inner``), which keeps the timer's resolution and
    launch jitter out of short kernels; then ``repeat`` samples are taken,
    each the time of ``inner`` calls divided by ``inner``.

    Args:
        fn: The call to time, given its index.
        timer: A :class:`CudaTimer`, :class:`CpuTimer` or alike.
        warmup: Untimed calls first.
        repeat: Samples to take (>= 1).
        min_sample_s: The shortest time a sample should last, in seconds.
        max_inner: The most calls one sample may hold.

    Returns:
        ``repeat`` per-call times in seconds (take the median).

    Raises:
        ValueError: ``repeat`` or ``max_inner`` below 1, or ``warmup`` below 0.

    Example:
        >>> times = time_per_call(lambda i: a.sum(), CudaTimer(xp), repeat=10)  # doctest: +SKIP
        >>> statistics.median(times)  # doctest: +SKIP
    """
    if repeat < 1 or max_inner < 1 or warmup < 0:
        raise ValueError(f"repeat and max_inner must be >= 1 and warmup >= 0; "
                         f"got {repeat}, {max_inner} and {warmup}")
    call = 0
    for _ in range(warmup):
        fn(call)
        call += 1
    one = max(timer.time(lambda: fn(call)), 1e-6)
    call += 1
    inner = int(min(max_inner, max(1, math.ceil(min_sample_s / one))))
    times = []
    for _ in range(repeat):
        first = call

        def block() -> None:
            for i in range(first, first + inner):
                fn(i)

        times.append(timer.time(block) / inner)
        call += inner
    return times
