//! Benchmarks the scheduler's timing wheel against `BinaryHeap` and tokio-util's `DelayQueue`; it never touches the network, a store or Docker.
//!
//! Run it as `cargo run --release -p kairos-bench --bin wheel` (options: `--sizes 1000000,10000000`
//! `--reps 3`). For every size N and structure it runs, in a fresh child process each time so
//! resident memory starts clean: insert N entries with 24-byte payloads and deadlines uniform over
//! a 5-minute horizon (seeded), cancel a random 10 %, then drain by stepping time 1 ms at a time
//! to the end of the horizon. It prints the median of the repetitions as a markdown table.
//!
//! - `BinaryHeap`: a min-heap of `(deadline, seq, payload)`; cancel is lazy: the seq goes into a
//!   tombstone `HashSet`, and a popped entry whose seq is in it is dropped instead of fired.
//! - `DelayQueue`: driven inside a current-thread tokio runtime with paused time; each 1 ms step
//!   is `tokio::time::advance` followed by `poll_expired` until it is pending.
//! - Bytes per entry: growth of `VmRSS` (from `/proc/self/status`) across the insert phase,
//!   divided by N; the handles kept for cancelling are allocated and touched before.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};
use std::fmt::Write as _;
use std::future::poll_fn;
use std::hint::black_box;
use std::process::{Command, ExitCode};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kairos_scheduler::wheel::TimingWheel;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio_util::time::DelayQueue;

/// A fire as the scheduler will hold it: a schedule's UUID and the fire time. 24 bytes.
type Payload = ([u8; 16], u64);

/// Deadlines are uniform over `[T0, T0 + HORIZON_MS)`.
const HORIZON_MS: u64 = 5 * 60 * 1_000;
/// Epoch milliseconds in late 2023: a realistic "now" for the wheel.
const T0: u64 = 1_700_000_000_000;
const CANCEL_PERCENT: usize = 10;
const SEED: u64 = 0x6b61_6972_6f73;
/// A structure whose single run takes longer than this gets one repetition.
const SLOW_RUN: Duration = Duration::from_secs(180);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Structure {
    Wheel,
    Heap,
    DelayQueue,
}

impl Structure {
    const ALL: [Structure; 3] = [Structure::Wheel, Structure::Heap, Structure::DelayQueue];

    fn arg(self) -> &'static str {
        match self {
            Structure::Wheel => "wheel",
            Structure::Heap => "heap",
            Structure::DelayQueue => "delay-queue",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Structure::Wheel => "kairos TimingWheel",
            Structure::Heap => "std BinaryHeap + tombstones",
            Structure::DelayQueue => "tokio-util DelayQueue",
        }
    }

    fn parse(arg: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.arg() == arg)
    }
}

/// One run's figures.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    insert_ns: f64,
    cancel_ns: f64,
    drain_ns: f64,
    bytes_per_entry: f64,
    seconds: f64,
}

/// What every structure is asked to do, generated before anything is measured.
#[derive(Debug)]
struct Workload {
    /// Deadline of entry `i`, as an offset from `T0` in ms.
    offsets: Vec<u64>,
    /// For entry `i`, its position in the cancel order, or `u32::MAX` if it is not cancelled.
    cancel_slot: Vec<u32>,
    cancels: usize,
}

impl Workload {
    fn new(n: usize, seed: u64) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let offsets: Vec<u64> = (0..n).map(|_| rng.random_range(0..HORIZON_MS)).collect();
        let cancels = n * CANCEL_PERCENT / 100;
        let mut indices: Vec<u32> = (0..u32::try_from(n).context("n fits in u32")?).collect();
        let (chosen, _) = indices.partial_shuffle(&mut rng, cancels);
        let mut cancel_slot = vec![u32::MAX; n];
        for (slot, &entry) in chosen.iter().enumerate() {
            cancel_slot[entry as usize] = u32::try_from(slot).context("slot fits in u32")?;
        }
        Ok(Self {
            offsets,
            cancel_slot,
            cancels,
        })
    }

    fn n(&self) -> usize {
        self.offsets.len()
    }

    fn expected_fired(&self) -> usize {
        self.n() - self.cancels
    }

    /// Storage for the handles of the entries to cancel, touched so it is resident before the
    /// structure is measured.
    fn handle_store<H: Copy>(&self) -> Vec<Option<H>> {
        let mut handles = Vec::new();
        handles.resize(self.cancels, None);
        handles
    }
}

fn payload(index: usize, deadline: u64) -> Payload {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(index as u64).to_le_bytes());
    (id, deadline)
}

fn per(elapsed: Duration, count: usize) -> f64 {
    elapsed.as_nanos() as f64 / count.max(1) as f64
}

/// Resident set size of this process in bytes.
fn rss_bytes() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .context("no VmRSS line in /proc/self/status")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS has no value")?
        .parse()
        .context("VmRSS is not a number")?;
    Ok(kib * 1024)
}

fn bytes_per_entry(before: u64, after: u64, n: usize) -> f64 {
    after.saturating_sub(before) as f64 / n as f64
}

fn run_wheel(work: &Workload) -> Result<Sample> {
    let n = work.n();
    let mut handles = work.handle_store();
    let rss_before = rss_bytes()?;

    let start = Instant::now();
    let mut wheel = TimingWheel::new(T0);
    for (i, &offset) in work.offsets.iter().enumerate() {
        let handle = wheel.insert(T0 + offset, payload(i, T0 + offset));
        if let Some(slot) = handles.get_mut(work.cancel_slot[i] as usize) {
            *slot = Some(handle);
        }
    }
    let insert = start.elapsed();
    let rss_after = rss_bytes()?;

    let start = Instant::now();
    for handle in handles.iter_mut() {
        let handle = handle
            .take()
            .context("every cancelled entry has a handle")?;
        black_box(wheel.cancel(handle));
    }
    let cancel = start.elapsed();

    let start = Instant::now();
    let mut out = Vec::new();
    let mut fired = 0usize;
    let mut checksum = 0u64;
    for now in T0..=T0 + HORIZON_MS {
        wheel.advance(now, &mut out);
        fired += out.len();
        for (deadline, (_, fire_time)) in out.drain(..) {
            checksum = checksum.wrapping_add(deadline ^ fire_time);
        }
    }
    let drain = start.elapsed();
    black_box(checksum);
    if fired != work.expected_fired() || !wheel.is_empty() {
        bail!("wheel fired {fired}, expected {}", work.expected_fired());
    }
    Ok(Sample {
        insert_ns: per(insert, n),
        cancel_ns: per(cancel, work.cancels),
        drain_ns: per(drain, fired),
        bytes_per_entry: bytes_per_entry(rss_before, rss_after, n),
        seconds: 0.0,
    })
}

/// A min-heap entry: earliest deadline first, then insertion order.
#[derive(Debug)]
struct HeapEntry {
    deadline: u64,
    seq: u64,
    payload: Payload,
}

impl Ord for HeapEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

impl PartialOrd for HeapEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for HeapEntry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}

impl Eq for HeapEntry {}

fn run_heap(work: &Workload) -> Result<Sample> {
    let n = work.n();
    let mut handles = work.handle_store::<u64>();
    let rss_before = rss_bytes()?;

    let start = Instant::now();
    let mut heap = BinaryHeap::new();
    for (i, &offset) in work.offsets.iter().enumerate() {
        let seq = i as u64;
        heap.push(HeapEntry {
            deadline: T0 + offset,
            seq,
            payload: payload(i, T0 + offset),
        });
        if let Some(slot) = handles.get_mut(work.cancel_slot[i] as usize) {
            *slot = Some(seq);
        }
    }
    let insert = start.elapsed();
    let rss_after = rss_bytes()?;

    let start = Instant::now();
    let mut tombstones = HashSet::new();
    for handle in handles.iter_mut() {
        let seq = handle
            .take()
            .context("every cancelled entry has a handle")?;
        black_box(tombstones.insert(seq));
    }
    let cancel = start.elapsed();

    let start = Instant::now();
    let mut fired = 0usize;
    let mut checksum = 0u64;
    for now in T0..=T0 + HORIZON_MS {
        while heap.peek().is_some_and(|top| top.deadline <= now) {
            let entry = heap.pop().context("peeked an entry")?;
            if !tombstones.is_empty() && tombstones.remove(&entry.seq) {
                continue;
            }
            fired += 1;
            checksum = checksum.wrapping_add(entry.deadline ^ entry.payload.1);
        }
    }
    let drain = start.elapsed();
    black_box(checksum);
    if fired != work.expected_fired() || !heap.is_empty() {
        bail!("heap fired {fired}, expected {}", work.expected_fired());
    }
    Ok(Sample {
        insert_ns: per(insert, n),
        cancel_ns: per(cancel, work.cancels),
        drain_ns: per(drain, fired),
        bytes_per_entry: bytes_per_entry(rss_before, rss_after, n),
        seconds: 0.0,
    })
}

fn run_delay_queue(work: &Workload) -> Result<Sample> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .context("build a current-thread runtime")?;
    runtime.block_on(delay_queue(work))
}

async fn delay_queue(work: &Workload) -> Result<Sample> {
    let n = work.n();
    let mut handles = work.handle_store();
    let base = tokio::time::Instant::now();
    let rss_before = rss_bytes()?;

    let start = Instant::now();
    let mut queue = DelayQueue::new();
    for (i, &offset) in work.offsets.iter().enumerate() {
        let key = queue.insert_at(
            payload(i, T0 + offset),
            base + Duration::from_millis(offset),
        );
        if let Some(slot) = handles.get_mut(work.cancel_slot[i] as usize) {
            *slot = Some(key);
        }
    }
    let insert = start.elapsed();
    let rss_after = rss_bytes()?;

    let start = Instant::now();
    for handle in handles.iter_mut() {
        let key = handle
            .take()
            .context("every cancelled entry has a handle")?;
        black_box(
            queue
                .try_remove(&key)
                .context("a cancelled entry is pending")?,
        );
    }
    let cancel = start.elapsed();

    let start = Instant::now();
    let mut fired = 0usize;
    let mut checksum = 0u64;
    // One step past the horizon in case the queue rounds a deadline up by a millisecond.
    for step in 0..=HORIZON_MS + 1 {
        if step > 0 {
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        while let Poll::Ready(Some(expired)) =
            poll_fn(|cx| Poll::Ready(queue.poll_expired(cx))).await
        {
            fired += 1;
            let (_, fire_time) = expired.into_inner();
            checksum = checksum.wrapping_add(fire_time);
        }
    }
    let drain = start.elapsed();
    black_box(checksum);
    if fired != work.expected_fired() || !queue.is_empty() {
        bail!(
            "delay queue fired {fired}, expected {}",
            work.expected_fired()
        );
    }
    Ok(Sample {
        insert_ns: per(insert, n),
        cancel_ns: per(cancel, work.cancels),
        drain_ns: per(drain, fired),
        bytes_per_entry: bytes_per_entry(rss_before, rss_after, n),
        seconds: 0.0,
    })
}

/// Child mode: one structure, one size, one seed; prints one `result` line.
fn child(structure: Structure, n: usize, seed: u64) -> Result<()> {
    let started = Instant::now();
    let work = Workload::new(n, seed)?;
    let mut sample = match structure {
        Structure::Wheel => run_wheel(&work)?,
        Structure::Heap => run_heap(&work)?,
        Structure::DelayQueue => run_delay_queue(&work)?,
    };
    sample.seconds = started.elapsed().as_secs_f64();
    println!(
        "result {} {} {} {} {}",
        sample.insert_ns, sample.cancel_ns, sample.drain_ns, sample.bytes_per_entry, sample.seconds
    );
    Ok(())
}

fn run_child(structure: Structure, n: usize, seed: u64) -> Result<Sample> {
    let exe = std::env::current_exe().context("find this benchmark's executable")?;
    let output = Command::new(exe)
        .args([
            "--child",
            structure.arg(),
            &n.to_string(),
            &seed.to_string(),
        ])
        .output()
        .context("run a benchmark child")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "{} n={n} failed: {}{}",
            structure.arg(),
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("result "))
        .context("the child printed no result line")?;
    let figures: Vec<f64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("the child's result line is not numbers")?;
    let [insert_ns, cancel_ns, drain_ns, bytes_per_entry, seconds] = figures[..] else {
        bail!(
            "the child's result line has {} figures, not 5",
            figures.len()
        );
    };
    Ok(Sample {
        insert_ns,
        cancel_ns,
        drain_ns,
        bytes_per_entry,
        seconds,
    })
}

fn median(samples: &[Sample], figure: impl Fn(&Sample) -> f64) -> f64 {
    let mut values: Vec<f64> = samples.iter().map(figure).collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => values[len / 2],
        len => (values[len / 2 - 1] + values[len / 2]) / 2.0,
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
    format!("{cores} cores, {model}, {mem_gib:.1} GiB RAM")
}

struct Row {
    n: usize,
    structure: Structure,
    reps: usize,
    insert_ns: f64,
    cancel_ns: f64,
    drain_ns: f64,
    bytes_per_entry: f64,
    seconds: f64,
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews the figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|line| {
            line.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn orchestrate(sizes: &[usize], reps: usize) -> Result<String> {
    let machine = machine();
    let load_at_start = load_average();
    eprintln!("machine: {machine}; load average {load_at_start}");
    let mut rows = Vec::new();
    for &n in sizes {
        for structure in Structure::ALL {
            let mut samples = Vec::new();
            for rep in 0..reps {
                let sample = run_child(structure, n, SEED + rep as u64)?;
                eprintln!("{} n={n} rep={rep}: {sample:?}", structure.arg());
                samples.push(sample);
                if sample.seconds > SLOW_RUN.as_secs_f64() {
                    eprintln!(
                        "{} n={n}: a run took over 3 minutes, one repetition",
                        structure.arg()
                    );
                    break;
                }
            }
            rows.push(Row {
                n,
                structure,
                reps: samples.len(),
                insert_ns: median(&samples, |s| s.insert_ns),
                cancel_ns: median(&samples, |s| s.cancel_ns),
                drain_ns: median(&samples, |s| s.drain_ns),
                bytes_per_entry: median(&samples, |s| s.bytes_per_entry),
                seconds: median(&samples, |s| s.seconds),
            });
        }
    }
    let mut out = table(&rows);
    let _ = writeln!(
        out,
        "machine: {machine}; load average (1, 5, 15 min) {load_at_start} at start, {} at end",
        load_average()
    );
    Ok(out)
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| N | structure | insert ns/op | cancel ns/op | drain ns/fired | RSS bytes/entry | run s | reps |"
    );
    let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            row.n,
            row.structure.title(),
            row.insert_ns,
            row.cancel_ns,
            row.drain_ns,
            row.bytes_per_entry,
            row.seconds,
            row.reps
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| N | compared with the wheel | insert | cancel | drain | RSS bytes/entry |"
    );
    let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|");
    for row in rows.iter().filter(|row| row.structure != Structure::Wheel) {
        let Some(wheel) = rows
            .iter()
            .find(|w| w.n == row.n && w.structure == Structure::Wheel)
        else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {} | {} / wheel | {:.2}× | {:.2}× | {:.2}× | {:.2}× |",
            row.n,
            row.structure.title(),
            row.insert_ns / wheel.insert_ns,
            row.cancel_ns / wheel.cancel_ns,
            row.drain_ns / wheel.drain_ns,
            row.bytes_per_entry / wheel.bytes_per_entry
        );
    }
    let _ = writeln!(
        out,
        "\nwheel slab entry for a {}-byte payload: {} bytes (target ≤ 64)",
        std::mem::size_of::<Payload>(),
        TimingWheel::<Payload>::entry_size()
    );
    out
}

fn parse_list(value: &str) -> Option<Vec<usize>> {
    value
        .split(',')
        .map(|n| n.replace('_', "").parse().ok().filter(|&n| n > 0))
        .collect()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args[..] {
        ["--child", structure, n, seed] => {
            let Some(structure) = Structure::parse(structure) else {
                eprintln!("wheel: unknown structure {structure}");
                return ExitCode::from(64);
            };
            let (Ok(n), Ok(seed)) = (n.parse(), seed.parse()) else {
                eprintln!("wheel: --child takes a structure, a size and a seed");
                return ExitCode::from(64);
            };
            child(structure, n, seed)
        }
        _ => {
            let mut sizes = vec![1_000_000, 10_000_000];
            let mut reps = 3;
            let mut rest = args.as_slice();
            while let [flag, value, tail @ ..] = rest {
                match (*flag, parse_list(value)) {
                    ("--sizes", Some(list)) => sizes = list,
                    ("--reps", Some(list)) if list.len() == 1 => reps = list[0],
                    _ => {
                        eprintln!("wheel: usage: wheel [--sizes N,N] [--reps R]");
                        return ExitCode::from(64);
                    }
                }
                rest = tail;
            }
            if !rest.is_empty() {
                eprintln!("wheel: usage: wheel [--sizes N,N] [--reps R]");
                return ExitCode::from(64);
            }
            orchestrate(&sizes, reps).map(|table| print!("{table}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wheel: {error:#}");
            ExitCode::FAILURE
        }
    }
}
