//! What one instance may use: memory, and time per call.
//!
//! Time is charged as CPU time, not wall time, so a hook on a thread the
//! kernel set aside under load is not blamed for time it did not run; a
//! wall-clock ceiling still ends a call that takes too long for any reason.
//!
//! How: the engine's epoch advances every [`EPOCH_TICK`] and a call's first
//! deadline is one tick away, so the calls that finish within a tick (nearly
//! all hooks) cost nothing more than reading the wall clock once. A call
//! still running at the tick reads its thread's CPU clock and is given the
//! rest of its CPU budget, and so on until the budget or the ceiling is spent.

use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, UpdateDeadline};

use crate::config::ByteSize;

/// How often the engine's epoch advances; deadlines are counted in these.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The per-call and per-instance limits of one chain entry.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// CPU time one hook call may use.
    pub deadline: Duration,
    /// Wall time after which a call is ended whatever CPU it used.
    pub wall_deadline: Duration,
    pub memory: ByteSize,
}

impl Limits {
    /// `deadline` and `memory`, with the default wall-clock ceiling.
    pub fn new(deadline: Duration, memory: ByteSize) -> Self {
        Self {
            deadline,
            wall_deadline: default_wall_deadline(deadline),
            memory,
        }
    }

    /// Instantiation and `init` may parse a large config: at least a second
    /// of CPU, and at least ten of wall time.
    pub fn for_init(&self) -> Self {
        Self {
            deadline: self.deadline.max(Duration::from_secs(1)),
            wall_deadline: self.wall_deadline.max(Duration::from_secs(10)),
            memory: self.memory,
        }
    }
}

/// Ten times the CPU deadline, and at least a second.
pub fn default_wall_deadline(deadline: Duration) -> Duration {
    deadline.saturating_mul(10).max(Duration::from_secs(1))
}

/// Refuses memory growth past the limit and remembers that it did, so the
/// trap that follows can be reported as what it is.
#[derive(Debug)]
pub struct MemoryLimit {
    /// What all of the instance's linear memories together may hold: a
    /// component with several memories does not get the budget once each.
    pub max: ByteSize,
    pub denied: bool,
    /// Bytes held by all memories, and elements by all tables, so far.
    memory_used: u64,
    table_elements: u64,
}

/// Table elements (function references) one instance may hold in all.
const MAX_TABLE_ELEMENTS: u64 = 100_000;

impl MemoryLimit {
    pub fn new(max: ByteSize) -> Self {
        Self {
            max,
            denied: false,
            memory_used: 0,
            table_elements: 0,
        }
    }
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = (desired as u64).saturating_sub(current as u64);
        let total = self.memory_used.saturating_add(growth);
        let allowed = total <= self.max.0;
        if allowed {
            self.memory_used = total;
        }
        self.denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = (desired as u64).saturating_sub(current as u64);
        let total = self.table_elements.saturating_add(growth);
        let allowed = total <= MAX_TABLE_ELEMENTS;
        if allowed {
            self.table_elements = total;
        }
        Ok(allowed)
    }

    // Components built from Rust have one or two of each; these bound a
    // hostile one that declares thousands.
    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        16
    }
}

/// The clock of the call in progress: when it started, and the CPU time it
/// has been charged.
#[derive(Debug)]
pub struct CallClock {
    limits: Limits,
    started: Instant,
    /// At the first tick of this call, once reached: the thread's CPU time,
    /// and what the call is charged for the time before it.
    first_tick: Option<(Duration, Duration)>,
    /// The limit this call ran past, once it has.
    overrun: Option<Overrun>,
}

/// Which limit a call ran past.
/// Where a call's clock stood when it began waiting on the host.
#[derive(Debug, Clone, Copy)]
pub struct Paused {
    at: Instant,
    cpu_used: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overrun {
    Cpu,
    Wall,
}

impl CallClock {
    pub fn idle() -> Self {
        Self::start(Limits::new(Duration::ZERO, ByteSize(0)))
    }

    /// A call starts now under `limits`; its first check is one tick away.
    pub fn start(limits: Limits) -> Self {
        Self {
            limits,
            started: Instant::now(),
            first_tick: None,
            overrun: None,
        }
    }

    /// Called when the epoch deadline is reached, `wall` after the call
    /// started: how many more ticks the call may run, or which limit it ran
    /// past.
    pub fn on_tick(&mut self, thread_cpu: Duration, wall: Duration) -> Result<u64, Overrun> {
        // Before its first tick a call can have run at most a tick (it is
        // checked as soon as it runs after one), and no longer than it existed.
        let (cpu_at_first, before_first) = *self
            .first_tick
            .get_or_insert((thread_cpu, EPOCH_TICK.min(wall)));
        let used = before_first + thread_cpu.saturating_sub(cpu_at_first);
        if used >= self.limits.deadline {
            return Err(Overrun::Cpu);
        }
        if wall >= self.limits.wall_deadline {
            return Err(Overrun::Wall);
        }
        let left = (self.limits.deadline - used).min(self.limits.wall_deadline - wall);
        Ok(ticks(left))
    }

    /// The epoch callback's answer for `on_tick`, remembering an overrun.
    pub fn update(&mut self) -> UpdateDeadline {
        match self.on_tick(thread_cpu_time(), self.started.elapsed()) {
            Ok(ticks) => UpdateDeadline::Continue(ticks),
            Err(which) => {
                self.overrun = Some(which);
                UpdateDeadline::Interrupt
            }
        }
    }

    /// The call waits on the host (a store's answer): neither its wall time
    /// nor the CPU of the thread it resumes on is the plugin's.
    pub fn pause(&self) -> Paused {
        Paused {
            at: Instant::now(),
            cpu_used: self.first_tick.map(|(cpu_at_first, before)| {
                before + thread_cpu_time().saturating_sub(cpu_at_first)
            }),
        }
    }

    /// The wait is over: the clock goes on from where `pause` left it, on
    /// whichever thread the call resumed.
    pub fn resume(&mut self, paused: Paused) {
        self.started = self
            .started
            .checked_add(paused.at.elapsed())
            .unwrap_or(self.started);
        if let Some(used) = paused.cpu_used {
            self.first_tick = Some((thread_cpu_time(), used));
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The limit this call ran past, if it was ended for time.
    pub fn overrun(&self) -> Option<Overrun> {
        self.overrun
    }
}

/// Epoch ticks that cover `left`, rounded up; at least one, and at most
/// `u32::MAX` (wasmtime adds them to the current epoch, which must not
/// overflow; the call is checked again by then anyway).
fn ticks(left: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos().max(1);
    let ticks = left
        .as_nanos()
        .div_ceil(tick)
        .clamp(1, u128::from(u32::MAX));
    u64::try_from(ticks).unwrap_or(u64::from(u32::MAX))
}

/// CPU time the calling thread has used.
pub fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_memory_budget_covers_all_memories_of_an_instance() {
        const MIB: usize = 1 << 20;
        let mut limit = MemoryLimit::new(ByteSize::mib(8));
        assert!(limit.memory_growing(0, 6 * MIB, None).unwrap_or(false));
        // A second memory asking for 6 MiB would make 12 of an 8 MiB budget.
        assert!(!limit.memory_growing(0, 6 * MIB, None).unwrap_or(true));
        assert!(limit.denied);
        assert!(limit.memory_growing(0, 2 * MIB, None).unwrap_or(false));
        // Growing the first from 6 to 7 MiB: over by one.
        assert!(!limit.memory_growing(6 * MIB, 7 * MIB, None).unwrap_or(true));
        let mut tables = MemoryLimit::new(ByteSize::mib(8));
        assert!(tables.table_growing(0, 60_000, None).unwrap_or(false));
        assert!(!tables.table_growing(0, 60_000, None).unwrap_or(true));
    }

    fn limits(deadline_ms: u64, wall_ms: u64) -> Limits {
        Limits {
            deadline: MS * deadline_ms as u32,
            wall_deadline: MS * wall_ms as u32,
            memory: ByteSize::mib(1),
        }
    }

    #[test]
    fn a_call_that_was_not_running_is_not_charged_for_the_wait() {
        let mut clock = CallClock::start(limits(20, 60_000));
        // First tick: at most a tick is charged, however long the wall clock says.
        let cpu = Duration::from_secs(7);
        assert_eq!(clock.on_tick(cpu, MS * 500), Ok(19));
        // Later ticks: only the CPU used since the first tick counts.
        assert_eq!(clock.on_tick(cpu + MS * 5, MS * 900), Ok(14));
        assert_eq!(clock.on_tick(cpu + MS * 18, MS * 2000), Ok(1));
        assert_eq!(clock.on_tick(cpu + MS * 19, MS * 3000), Err(Overrun::Cpu));
    }

    #[test]
    fn a_call_younger_than_a_tick_is_charged_its_age_at_the_first_tick() {
        // A 1ms budget is not spent by a call that began just before a tick.
        let mut clock = CallClock::start(limits(1, 60_000));
        let cpu = Duration::from_secs(1);
        assert_eq!(clock.on_tick(cpu, Duration::from_micros(100)), Ok(1));
        assert_eq!(clock.on_tick(cpu + MS, MS * 2), Err(Overrun::Cpu));
    }

    #[test]
    fn the_wall_clock_ceiling_ends_a_call_that_used_little_cpu() {
        let mut clock = CallClock::start(limits(20, 50));
        assert_eq!(clock.on_tick(Duration::ZERO, MS * 40), Ok(10));
        assert_eq!(clock.on_tick(Duration::ZERO, MS * 50), Err(Overrun::Wall));
    }

    #[test]
    fn budgets_past_any_tick_count_do_not_overflow() {
        let mut clock = CallClock::start(Limits {
            deadline: Duration::MAX,
            wall_deadline: Duration::MAX,
            memory: ByteSize::mib(1),
        });
        assert_eq!(clock.on_tick(Duration::ZERO, MS), Ok(u64::from(u32::MAX)));
    }

    #[test]
    fn the_default_ceiling_is_ten_deadlines_and_at_least_a_second() {
        assert_eq!(default_wall_deadline(MS * 20), Duration::from_secs(1));
        assert_eq!(default_wall_deadline(MS * 500), Duration::from_secs(5));
        let init = Limits::new(MS * 20, ByteSize::mib(1)).for_init();
        assert_eq!(init.deadline, Duration::from_secs(1));
        assert_eq!(init.wall_deadline, Duration::from_secs(10));
    }

    #[test]
    fn the_thread_cpu_clock_moves_with_work() {
        let before = thread_cpu_time();
        let mut n = 0u64;
        while thread_cpu_time() - before < MS * 2 {
            n = std::hint::black_box(n + 1);
        }
        assert!(thread_cpu_time() >= before + MS * 2);
    }
}
