//! A fork-join pool for the kernels.
//!
//! Decoding one token runs ~100 short parallel loops (tens of microseconds each). A general
//! work-stealing pool parks its idle threads and blocks the caller, so every loop pays a
//! sleep/wake and a context switch; here the caller takes part in the work and `n - 1` workers
//! spin briefly between loops before parking (as llama.cpp's thread pool does).
//!
//! The thread count comes from [`set_threads`], else `HERD_THREADS` or `RAYON_NUM_THREADS`, else
//! the number of cores. A loop started from inside a pool task, or while another thread is
//! using the pool, runs sequentially on its caller. A thread that calls [`use_own_pool`] (each
//! engine's scheduler when a process runs several) gets a pool of its own, so that engines do
//! not take turns on one.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Spin iterations of an idle worker before it parks (~100 µs).
const SPIN_LIMIT: u32 = 20_000;

type Task = dyn Fn(usize) + Sync;

#[derive(Clone, Copy)]
struct JobRef {
    // Erased `&Task` of the caller's stack frame; valid while the caller waits in `run`.
    f: *const Task,
    tasks: usize,
    generation: u64,
}
// SAFETY: the pointee is `Sync` and outlives every use (see `parallel_for`).
unsafe impl Send for JobRef {}

struct Pool {
    /// Threads the pool's loops run on, the caller included.
    threads: usize,
    generation: AtomicU64,
    closed: AtomicU64,
    job: Mutex<Option<JobRef>>,
    next: AtomicUsize,
    done: AtomicUsize,
    active: AtomicUsize,
    panicked: AtomicBool,
    sleepers: AtomicUsize,
    park: Mutex<()>,
    wake: Condvar,
    submit: Mutex<()>,
}

static THREADS: OnceLock<usize> = OnceLock::new();
static POOL: OnceLock<&'static Pool> = OnceLock::new();

thread_local! {
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
    /// The pool of this thread, when it has one of its own.
    static OWN: Cell<Option<&'static Pool>> = const { Cell::new(None) };
}

/// Sets the number of threads (the caller included). Only the first call before the pool
/// starts counts; returns whether it was taken.
pub fn set_threads(n: usize) -> bool {
    THREADS.set(n.max(1)).is_ok() && POOL.get().is_none()
}

/// The number of threads kernels run on from this thread (the caller included): its own pool's,
/// else the process-wide count.
pub fn threads() -> usize {
    OWN.with(Cell::get).map_or_else(process_threads, |p| p.threads)
}

/// Gives the calling thread a pool of its own with `threads` threads (itself included; 1 runs
/// every loop on the caller). For a thread that lives as long as the process, as an engine's
/// scheduler does: the pool's threads are never joined.
pub fn use_own_pool(threads: usize) {
    let p = new_pool(threads.max(1));
    OWN.with(|o| o.set(Some(p)));
}

/// The process-wide thread count.
pub fn process_threads() -> usize {
    *THREADS.get_or_init(|| {
        ["HERD_THREADS", "RAYON_NUM_THREADS"]
            .iter()
            .find_map(|k| std::env::var(k).ok()?.parse::<usize>().ok().filter(|n| *n > 0))
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

fn pool() -> &'static Pool {
    OWN.with(Cell::get).unwrap_or_else(|| POOL.get_or_init(|| new_pool(process_threads())))
}

fn new_pool(threads: usize) -> &'static Pool {
    let workers = threads - 1;
    let p: &'static Pool = Box::leak(Box::new(Pool {
        threads,
        generation: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        job: Mutex::new(None),
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        active: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
        sleepers: AtomicUsize::new(0),
        park: Mutex::new(()),
        wake: Condvar::new(),
        submit: Mutex::new(()),
    }));
    for i in 0..workers {
        std::thread::Builder::new().name(format!("herd-kernel-{i}")).spawn(move || worker(p)).expect("spawning a kernel thread");
    }
    p
}

fn run_tasks(p: &Pool, f: &(dyn Fn(usize) + Sync + '_), tasks: usize) {
    loop {
        let i = p.next.fetch_add(1, SeqCst);
        if i >= tasks {
            break;
        }
        if catch_unwind(AssertUnwindSafe(|| f(i))).is_err() {
            p.panicked.store(true, SeqCst);
        }
        p.done.fetch_add(1, SeqCst);
    }
}

fn worker(p: &'static Pool) {
    IN_TASK.with(|t| t.set(true));
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        loop {
            let g = p.generation.load(SeqCst);
            if g != seen {
                seen = g;
                break;
            }
            if spins < SPIN_LIMIT {
                spins += 1;
                std::hint::spin_loop();
            } else {
                let guard = p.park.lock().unwrap_or_else(|e| e.into_inner());
                p.sleepers.fetch_add(1, SeqCst);
                if p.generation.load(SeqCst) == seen {
                    let _ = p.wake.wait_timeout(guard, Duration::from_millis(50));
                }
                p.sleepers.fetch_sub(1, SeqCst);
                spins = 0;
            }
        }
        p.active.fetch_add(1, SeqCst);
        // A job closed before we joined may already be gone from its caller's stack.
        if p.closed.load(SeqCst) != seen {
            let job = *p.job.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(job) = job.filter(|j| j.generation == seen) {
                // SAFETY: the job is open, so its caller is still waiting in `parallel_for`
                // (it waits for `active == 0` after closing), and `f` is alive.
                run_tasks(p, unsafe { &*job.f }, job.tasks);
            }
        }
        p.active.fetch_sub(1, SeqCst);
    }
}

/// Runs `f(0) … f(tasks - 1)` on the pool's threads and the caller; returns when all are done.
pub fn parallel_for(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    if tasks == 0 {
        return;
    }
    let sequential = || (0..tasks).for_each(f);
    if tasks == 1 || threads() == 1 || IN_TASK.with(Cell::get) {
        return sequential();
    }
    let p = pool();
    let Ok(_submit) = p.submit.try_lock() else { return sequential() };
    let generation = p.generation.load(SeqCst) + 1;
    // SAFETY: only the lifetime is erased; we wait below until no worker can touch `f`.
    let erased: *const Task = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Task>(f) };
    *p.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(JobRef { f: erased, tasks, generation });
    p.next.store(0, SeqCst);
    p.done.store(0, SeqCst);
    p.panicked.store(false, SeqCst);
    p.generation.store(generation, SeqCst);
    if p.sleepers.load(SeqCst) > 0 {
        let _g = p.park.lock().unwrap_or_else(|e| e.into_inner());
        p.wake.notify_all();
    }
    IN_TASK.with(|t| t.set(true));
    run_tasks(p, f, tasks);
    IN_TASK.with(|t| t.set(false));
    while p.done.load(SeqCst) < tasks {
        std::hint::spin_loop();
    }
    p.closed.store(generation, SeqCst);
    while p.active.load(SeqCst) > 0 {
        std::hint::spin_loop();
    }
    if p.panicked.load(SeqCst) {
        panic!("a kernel task panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn threads_with_pools_of_their_own_run_their_loops_in_parallel_at_once() {
        // Two engines' schedulers, two threads each: both run on two threads at the same time
        // (on one shared pool the second would run alone on its caller).
        let peak = |threads: usize| {
            std::thread::spawn(move || {
                use_own_pool(threads);
                assert_eq!(super::threads(), threads);
                let running = AtomicU32::new(0);
                let most = AtomicU32::new(0);
                let until = std::time::Instant::now() + Duration::from_millis(300);
                while std::time::Instant::now() < until {
                    parallel_for(threads * 4, &|_| {
                        let now = running.fetch_add(1, SeqCst) + 1;
                        most.fetch_max(now, SeqCst);
                        let t = std::time::Instant::now();
                        while t.elapsed() < Duration::from_micros(200) {
                            std::hint::spin_loop();
                        }
                        running.fetch_sub(1, SeqCst);
                    });
                }
                most.load(SeqCst)
            })
        };
        let (a, b) = (peak(2), peak(2));
        assert_eq!((a.join().expect("a"), b.join().expect("b")), (2, 2));
        assert_eq!(
            std::thread::spawn(|| {
                use_own_pool(1);
                super::threads()
            })
            .join()
            .expect("c"),
            1
        );
    }

    #[test]
    fn every_task_runs_exactly_once_across_many_loops_and_threads() {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(|| {
                    for n in [1usize, 2, 7, 64, 513] {
                        let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                        for _ in 0..50 {
                            parallel_for(n, &|i| {
                                hits[i].fetch_add(1, SeqCst);
                                // a nested loop runs inline
                                parallel_for(2, &|_| {});
                            });
                        }
                        assert!(hits.iter().all(|h| h.load(SeqCst) == 50));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("no panic");
        }
    }
}
