//! A small thread pool for kernel launches: the caller and `threads - 1`
//! workers claim blocks of grid rows until none are left.
//!
//! Decode issues hundreds of launches per token, each a few microseconds to a
//! few hundred, so workers spin between launches (and sleep after a while
//! without work). The caller never waits for a worker that has not started:
//! blocks are claimed from a ticket that carries the launch's epoch, and the
//! caller waits only for claimed blocks to finish. On a busy machine the
//! caller simply runs most blocks itself.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Kernel;

/// One launch: a kernel, its arguments and its grid.
#[derive(Clone, Copy)]
pub struct Job {
    pub kernel: Kernel,
    pub rows: usize,
    /// Rows per block claimed at a time.
    pub block: usize,
}

struct Shared {
    /// The current job and its epoch.
    job: Mutex<(u64, Option<Job>)>,
    /// `epoch << 32 | next block`.
    ticket: AtomicU64,
    /// Blocks of the current epoch that have finished.
    done: AtomicUsize,
    stop: AtomicBool,
    sleepers: AtomicUsize,
    wake: Condvar,
    sleep_lock: Mutex<()>,
}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    epoch: u64,
}

/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_millis(3);

impl Pool {
    /// A pool of `threads` threads in all (the caller counts as one).
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            job: Mutex::new((0, None)),
            ticket: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            wake: Condvar::new(),
            sleep_lock: Mutex::new(()),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("gemma4c-jit-{i}"))
                    .spawn(move || worker(&s))
                    .expect("spawn a JIT worker thread")
            })
            .collect();
        Pool {
            shared,
            workers,
            epoch: 0,
        }
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs all rows of `job` (on as many threads as pick it up); returns when done.
    ///
    /// # Safety
    /// The kernel and its arguments must be valid for every row of the grid.
    pub unsafe fn run(&mut self, job: Job) {
        let blocks = job.rows.div_ceil(job.block.max(1));
        if self.workers.is_empty() || blocks < 2 {
            // SAFETY: the caller's guarantee.
            unsafe { job.kernel.call(0, job.rows) };
            return;
        }
        let s = &*self.shared;
        self.epoch = self.epoch % 0xffff_ffff + 1;
        let epoch = self.epoch;
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = (epoch, Some(job));
        s.done.store(0, Ordering::Relaxed);
        s.ticket.store(epoch << 32, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        // SAFETY: the caller's guarantee.
        unsafe { claim_blocks(s, epoch, &job) };
        while s.done.load(Ordering::Acquire) < blocks {
            std::hint::spin_loop();
        }
    }
}

/// Claims and runs blocks of `job` while the ticket is still at `epoch`.
unsafe fn claim_blocks(s: &Shared, epoch: u64, job: &Job) {
    let blocks = job.rows.div_ceil(job.block) as u64;
    let mut t = s.ticket.load(Ordering::Acquire);
    loop {
        if t >> 32 != epoch || (t & 0xffff_ffff) >= blocks {
            return;
        }
        match s
            .ticket
            .compare_exchange_weak(t, t + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                let b = (t & 0xffff_ffff) as usize;
                let begin = b * job.block;
                let end = (begin + job.block).min(job.rows);
                // SAFETY: the block belongs to the live job of this epoch.
                unsafe { job.kernel.call(begin, end) };
                s.done.fetch_add(1, Ordering::Release);
                t = s.ticket.load(Ordering::Acquire);
            }
            Err(now) => t = now,
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        // Wait for a new epoch: spin, then sleep.
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.stop.load(Ordering::Relaxed) {
                return;
            }
            if s.ticket.load(Ordering::Acquire) >> 32 != seen {
                break;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && start.elapsed() > SPIN {
                let g = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
                s.sleepers.fetch_add(1, Ordering::SeqCst);
                if s.ticket.load(Ordering::SeqCst) >> 32 == seen && !s.stop.load(Ordering::SeqCst) {
                    let _ = s.wake.wait_timeout(g, Duration::from_millis(50));
                }
                s.sleepers.fetch_sub(1, Ordering::SeqCst);
            } else {
                std::hint::spin_loop();
            }
        }
        let (epoch, job) = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        seen = epoch;
        if let Some(job) = job {
            // SAFETY: blocks are claimed only while their job's epoch is current,
            // and the owner keeps the job's buffers alive until all claimed blocks finish.
            unsafe { claim_blocks(s, epoch, &job) };
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _g = self.shared.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
