//! Hierarchical timing wheel that holds pending fires by millisecond deadline; it never reads a clock, does I/O or blocks.
//!
//! Hand-written on purpose: this is the core of the scheduler, every planned fire of an owned
//! shard passes through it, so its costs (O(1) insert and cancel, a few bytes per entry, no
//! per-millisecond ticking) and its guarantees (never early, never lost, never after a cancel)
//! are ours to own and to test, not a dependency's.
//!
//! # Time
//! Time is a `u64` count of milliseconds chosen by the caller (Unix epoch milliseconds in the
//! scheduler, anything in tests). The wheel only learns the time through [`TimingWheel::new`]
//! and [`TimingWheel::advance`]; the driver sleeps until [`TimingWheel::next_deadline`] instead of
//! ticking every millisecond.
//!
//! # Layout
//! - Six levels of 64 slots; a slot of level `k` spans `64^k` ms, so level 0 has 1 ms slots and
//!   the wheel as a whole spans `64^6` ms = 2^36 ms (about 795 days). An entry sits at the level
//!   of the highest 6-bit group in which its deadline differs from "now", so every entry of a
//!   level-0 slot has exactly that slot's deadline, and an entry of a higher slot is moved
//!   ("cascaded") one or more levels down when time reaches the start of its slot.
//! - One `u64` occupancy bitmap per level: the next occupied slot is a `trailing_zeros`.
//! - Entries live in a slab (`Vec` plus a free list); each slot is an intrusive doubly-linked
//!   list threaded through the slab by `u32` indices, so insert and cancel are O(1) and an entry
//!   never moves in memory. A [`TimerHandle`] is the slab index plus a generation that changes
//!   every time the index is freed, which makes a stale handle (its entry already fired or
//!   cancelled, its index possibly reused) a harmless no-op: a schedule update cancels the old
//!   fire's handle without having to know whether it already fired.
//! - Two more lists: *overdue* holds entries inserted with a deadline already in the past (they
//!   fire, sorted, at the next [`TimingWheel::advance`]); *overflow* holds deadlines 2^36 ms or
//!   more beyond now, re-examined when time reaches the 2^36 ms epoch of the earliest of them.
//!
//! # Memory
//! One slab entry is the payload plus 24 bytes (deadline 8, two links 8, generation 4, list 2,
//! tag 1, padding 1): **48 bytes for a 24-byte payload** such as `([u8; 16], u64)` (a UUID and a
//! fire time). Note that `(u128, u64)` is 32 bytes, not 24, on targets where `u128` is 16-byte
//! aligned (x86_64 since Rust 1.77); its entry is exactly 64 bytes. On top of the entries: the
//! slab `Vec`'s unused capacity (untouched pages of a large allocation are not resident) and a
//! fixed ~1.6 KiB of list heads. `docs/benchmarks.md` has measured resident bytes per entry.

use std::fmt;
use std::mem;

/// Bits of a deadline consumed by one level.
const SLOT_BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u64 = (SLOTS as u64) - 1;
/// Levels of the wheel.
const LEVELS: usize = 6;
/// log2 of the span of the whole wheel: deadlines whose distance from now (in the XOR sense)
/// needs more bits than this go to the overflow list.
const WHEEL_BITS: u32 = SLOT_BITS * LEVELS as u32;

/// The end of a list, and "no free entry".
const NIL: u32 = u32::MAX;
/// List ids `0 .. LEVELS * SLOTS` are wheel slots (`level * SLOTS + slot`); then these two.
const OVERDUE: u16 = (LEVELS * SLOTS) as u16;
const OVERFLOW: u16 = OVERDUE + 1;
const LISTS: usize = OVERFLOW as usize + 1;

/// Names one entry of one [`TimingWheel`]; returned by [`TimingWheel::insert`].
///
/// Cheap to copy and store next to what it schedules. Once its entry has fired or been
/// cancelled the handle is stale and [`TimingWheel::cancel`] ignores it, even if the slab index
/// has since been reused by another entry (generations differ). A generation is a `u32`, so a
/// handle could only be confused with a new entry after that one index is reused 2^32 times
/// while the stale handle is still kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerHandle {
    index: u32,
    generation: u32,
}

/// One slab cell. The fields of `Occupied` are inlined (not a struct) so the tag fits in the
/// padding next to `list` and an entry is payload + 24 bytes.
enum Entry<T> {
    Vacant {
        generation: u32,
        next_free: u32,
    },
    Occupied {
        generation: u32,
        /// Which list the entry is on (see `OVERDUE`, `OVERFLOW`).
        list: u16,
        prev: u32,
        next: u32,
        deadline: u64,
        payload: T,
    },
}

/// A hierarchical timing wheel of payloads `T` keyed by millisecond deadlines.
///
/// Guarantees, for every entry: it is handed out by exactly one [`advance`](Self::advance)
/// whose `now_ms` is at or past its deadline, namely the first such call, unless it was
/// cancelled before; it is never handed out after being cancelled.
pub struct TimingWheel<T> {
    /// The wheel's "now": everything due at or before it has been handed out, except entries
    /// inserted with a deadline before it, which wait on the overdue list for the next advance.
    now_ms: u64,
    entries: Vec<Entry<T>>,
    free_head: u32,
    len: usize,
    heads: [u32; LISTS],
    occupied: [u64; LEVELS],
    /// Lower bound of the deadlines on the overdue list (`u64::MAX` when it is empty).
    overdue_min: u64,
    /// Lower bound of the deadlines on the overflow list (`u64::MAX` when it is empty).
    overflow_min: u64,
}

/// The next point in time at which `advance` must act on a list.
#[derive(Clone, Copy)]
struct Expiration {
    at: u64,
    list: u16,
}

impl<T> TimingWheel<T> {
    /// An empty wheel whose time is `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self::with_capacity(now_ms, 0)
    }

    /// An empty wheel whose time is `now_ms`, with room for `capacity` entries before the slab
    /// grows.
    pub fn with_capacity(now_ms: u64, capacity: usize) -> Self {
        Self {
            now_ms,
            entries: Vec::with_capacity(capacity),
            free_head: NIL,
            len: 0,
            heads: [NIL; LISTS],
            occupied: [0; LEVELS],
            overdue_min: u64::MAX,
            overflow_min: u64::MAX,
        }
    }

    /// Bytes one entry takes in the slab for this payload type (not counting the slab's unused
    /// capacity).
    pub const fn entry_size() -> usize {
        mem::size_of::<Entry<T>>()
    }

    /// The wheel's time: the largest `now_ms` it has been created with or advanced to.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Number of pending entries (inserted, neither fired nor cancelled).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `payload`, due at `deadline_ms`. A deadline at or before the wheel's time is handed
    /// out by the next [`advance`](Self::advance). O(1).
    ///
    /// # Panics
    /// If the wheel already holds `u32::MAX - 1` entries (about 200 GB of them).
    pub fn insert(&mut self, deadline_ms: u64, payload: T) -> TimerHandle {
        let (index, generation) = match self.free_head {
            NIL => {
                let index = u32::try_from(self.entries.len())
                    .ok()
                    .filter(|&index| index != NIL)
                    .expect("a timing wheel holds at most u32::MAX - 1 entries");
                self.entries.push(Entry::Vacant {
                    generation: 0,
                    next_free: NIL,
                });
                (index, 0)
            }
            index => match self.entries[index as usize] {
                Entry::Vacant {
                    generation,
                    next_free,
                } => {
                    self.free_head = next_free;
                    (index, generation)
                }
                Entry::Occupied { .. } => unreachable!("the free list holds only vacant entries"),
            },
        };
        self.entries[index as usize] = Entry::Occupied {
            generation,
            list: OVERDUE,
            prev: NIL,
            next: NIL,
            deadline: deadline_ms,
            payload,
        };
        self.place(index, deadline_ms);
        self.len += 1;
        TimerHandle { index, generation }
    }

    /// Removes the entry named by `handle` and returns its payload if it is still pending;
    /// returns `None` and changes nothing if the handle is stale (its entry already fired or was
    /// cancelled). O(1).
    pub fn cancel(&mut self, handle: TimerHandle) -> Option<T> {
        match self.entries.get(handle.index as usize) {
            Some(Entry::Occupied { generation, .. }) if *generation == handle.generation => {}
            _ => return None,
        }
        self.unlink(handle.index);
        let (_, payload) = self.release(handle.index);
        Some(payload)
    }

    /// When the driver must next call [`advance`](Self::advance): `None` if the wheel is empty,
    /// else a **lower bound** of the earliest pending deadline, never later than it.
    ///
    /// It is exact when the earliest entry is due within the current 64 ms level-0 window (or is
    /// overdue, or is the earliest of the overflow list), unless the exact entry was cancelled.
    /// Otherwise it is the start of the wheel slot that holds the earliest entry: a driver that
    /// sleeps until it and advances wakes up at most once per level (five times) before reaching
    /// the exact deadline, and never after it. It may be at or before [`now_ms`](Self::now_ms)
    /// when overdue entries are waiting.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.heads[OVERDUE as usize] != NIL {
            return Some(self.overdue_min);
        }
        let wheel = (0..LEVELS)
            .filter_map(|level| self.level_expiration(level))
            .min();
        let overflow = (self.heads[OVERFLOW as usize] != NIL).then_some(self.overflow_min);
        wheel.or(overflow)
    }

    /// Moves the wheel's time to `now_ms` and appends to `out` every pending entry whose deadline
    /// is at or before it, as `(deadline_ms, payload)`, in non-decreasing deadline order.
    /// Entries of higher levels are cascaded down as time passes their slots.
    ///
    /// Time never runs backwards: a `now_ms` before [`now_ms`](Self::now_ms) is taken as
    /// `now_ms()` (so only overdue entries can come out). Costs O(1) per entry handed out or
    /// cascaded plus O(levels) per occupied slot passed, whatever the size of the step.
    pub fn advance(&mut self, now_ms: u64, out: &mut Vec<(u64, T)>) {
        let now_ms = now_ms.max(self.now_ms);
        if self.heads[OVERDUE as usize] != NIL {
            let start = out.len();
            let mut index = self.take_list(OVERDUE);
            self.overdue_min = u64::MAX;
            while index != NIL {
                let next = self.entries[index as usize].next();
                out.push(self.release(index));
                index = next;
            }
            // Stable and usually tiny: only entries inserted with a past deadline.
            out[start..].sort_by_key(|&(deadline, _)| deadline);
        }
        while let Some(expiration) = self.next_expiration() {
            if expiration.at > now_ms {
                break;
            }
            debug_assert!(expiration.at >= self.now_ms, "time never runs backwards");
            self.now_ms = expiration.at;
            let mut index = self.take_list(expiration.list);
            if expiration.list == OVERFLOW {
                self.overflow_min = u64::MAX;
            }
            let fire = usize::from(expiration.list) < SLOTS;
            while index != NIL {
                let next = self.entries[index as usize].next();
                if fire {
                    let fired = self.release(index);
                    debug_assert_eq!(fired.0, expiration.at, "a level-0 slot holds one deadline");
                    out.push(fired);
                } else {
                    let deadline = self.entries[index as usize].deadline();
                    self.place(index, deadline);
                }
                index = next;
            }
        }
        self.now_ms = now_ms;
    }

    /// The earliest list `advance` must process, with the time at which it must. On a tie the
    /// higher level wins, so its entries cascade into the level-0 slot before that slot fires.
    fn next_expiration(&self) -> Option<Expiration> {
        let mut best = (self.heads[OVERFLOW as usize] != NIL).then_some(Expiration {
            // The start of the 2^36 ms epoch of the earliest overflow entry; always after now.
            at: self.overflow_min & !((1u64 << WHEEL_BITS) - 1),
            list: OVERFLOW,
        });
        for level in (0..LEVELS).rev() {
            if let Some(at) = self.level_expiration(level)
                && best.is_none_or(|best| at < best.at)
            {
                let slot = self.occupied[level].trailing_zeros() as usize;
                let list = u16::try_from(level * SLOTS + slot).expect("list ids fit in u16");
                best = Some(Expiration { at, list });
            }
        }
        best
    }

    /// Start of the first occupied slot of `level`.
    ///
    /// Invariant that makes this a plain `trailing_zeros`: every entry of level `k` agrees with
    /// `now_ms` on all bits above the level (bits `6(k+1)..`) and its slot is at or after the
    /// slot of `now_ms`, because `advance` never moves time past the start of an occupied slot
    /// without processing it.
    fn level_expiration(&self, level: usize) -> Option<u64> {
        let occupied = self.occupied[level];
        if occupied == 0 {
            return None;
        }
        let shift = SLOT_BITS * level as u32;
        let slot = u64::from(occupied.trailing_zeros());
        debug_assert!(slot >= (self.now_ms >> shift) & SLOT_MASK);
        let level_start = self.now_ms & !((1u64 << (shift + SLOT_BITS)) - 1);
        Some(level_start + (slot << shift))
    }

    /// Links entry `index` (due at `deadline`) onto the list it belongs on given `now_ms`.
    fn place(&mut self, index: u32, deadline: u64) {
        let list = if deadline < self.now_ms {
            self.overdue_min = self.overdue_min.min(deadline);
            OVERDUE
        } else {
            // The highest bit in which deadline and now differ picks the level.
            let significant = 63 - ((self.now_ms ^ deadline) | SLOT_MASK).leading_zeros();
            let level = (significant / SLOT_BITS) as usize;
            if level < LEVELS {
                let slot = ((deadline >> (SLOT_BITS * level as u32)) & SLOT_MASK) as usize;
                u16::try_from(level * SLOTS + slot).expect("list ids fit in u16")
            } else {
                self.overflow_min = self.overflow_min.min(deadline);
                OVERFLOW
            }
        };
        let head = self.heads[usize::from(list)];
        self.entries[index as usize].set_links(list, NIL, head);
        if head != NIL {
            self.entries[head as usize].set_prev(index);
        }
        self.heads[usize::from(list)] = index;
        if list < OVERDUE {
            self.occupied[usize::from(list) / SLOTS] |= 1 << (usize::from(list) % SLOTS);
        }
    }

    /// Takes entry `index` off its list.
    fn unlink(&mut self, index: u32) {
        let (list, prev, next) = self.entries[index as usize].links();
        if prev == NIL {
            self.heads[usize::from(list)] = next;
        } else {
            self.entries[prev as usize].set_next(next);
        }
        if next != NIL {
            self.entries[next as usize].set_prev(prev);
        }
        if self.heads[usize::from(list)] == NIL {
            self.list_emptied(list);
        }
    }

    /// Detaches a whole list and returns its first entry; the entries keep their stale links
    /// until they are released or placed again.
    fn take_list(&mut self, list: u16) -> u32 {
        let head = mem::replace(&mut self.heads[usize::from(list)], NIL);
        self.list_emptied(list);
        head
    }

    fn list_emptied(&mut self, list: u16) {
        match list {
            OVERDUE => self.overdue_min = u64::MAX,
            OVERFLOW => self.overflow_min = u64::MAX,
            _ => self.occupied[usize::from(list) / SLOTS] &= !(1 << (usize::from(list) % SLOTS)),
        }
    }

    /// Frees the (already unlinked) entry `index` and returns its deadline and payload.
    fn release(&mut self, index: u32) -> (u64, T) {
        let entry = &mut self.entries[index as usize];
        let generation = entry.generation();
        let vacant = Entry::Vacant {
            generation: generation.wrapping_add(1),
            next_free: self.free_head,
        };
        self.free_head = index;
        self.len -= 1;
        match mem::replace(entry, vacant) {
            Entry::Occupied {
                deadline, payload, ..
            } => (deadline, payload),
            Entry::Vacant { .. } => unreachable!("only occupied entries are released"),
        }
    }
}

impl<T> Entry<T> {
    fn generation(&self) -> u32 {
        match self {
            Entry::Vacant { generation, .. } | Entry::Occupied { generation, .. } => *generation,
        }
    }

    fn deadline(&self) -> u64 {
        match self {
            Entry::Occupied { deadline, .. } => *deadline,
            Entry::Vacant { .. } => unreachable!("only occupied entries are on lists"),
        }
    }

    fn next(&self) -> u32 {
        match self {
            Entry::Occupied { next, .. } => *next,
            Entry::Vacant { .. } => unreachable!("only occupied entries are on lists"),
        }
    }

    fn links(&self) -> (u16, u32, u32) {
        match self {
            Entry::Occupied {
                list, prev, next, ..
            } => (*list, *prev, *next),
            Entry::Vacant { .. } => unreachable!("only occupied entries are on lists"),
        }
    }

    fn set_links(&mut self, new_list: u16, new_prev: u32, new_next: u32) {
        match self {
            Entry::Occupied {
                list, prev, next, ..
            } => {
                *list = new_list;
                *prev = new_prev;
                *next = new_next;
            }
            Entry::Vacant { .. } => unreachable!("only occupied entries are on lists"),
        }
    }

    fn set_prev(&mut self, new_prev: u32) {
        match self {
            Entry::Occupied { prev, .. } => *prev = new_prev,
            Entry::Vacant { .. } => unreachable!("only occupied entries are on lists"),
        }
    }

    fn set_next(&mut self, new_next: u32) {
        match self {
            Entry::Occupied { next, .. } => *next = new_next,
            Entry::Vacant { .. } => unreachable!("only occupied entries are on lists"),
        }
    }
}

impl<T> fmt::Debug for TimingWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimingWheel")
            .field("now_ms", &self.now_ms)
            .field("len", &self.len)
            .field("next_deadline", &self.next_deadline())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    /// A realistic "now": Unix epoch milliseconds in late 2023.
    const T0: u64 = 1_700_000_000_000;

    fn drain<T>(wheel: &mut TimingWheel<T>, now_ms: u64) -> Vec<(u64, T)> {
        let mut out = Vec::new();
        wheel.advance(now_ms, &mut out);
        out
    }

    /// Drives the wheel the way the scheduler will: sleep until `next_deadline`, advance to it.
    /// Returns the fired entries with the time they fired at, and the number of wake-ups.
    fn drive_by_next_deadline<T>(wheel: &mut TimingWheel<T>) -> (Vec<(u64, u64, T)>, usize) {
        let mut fired = Vec::new();
        let mut wakeups = 0;
        let mut out = Vec::new();
        while let Some(at) = wheel.next_deadline() {
            let at = at.max(wheel.now_ms());
            wheel.advance(at, &mut out);
            wakeups += 1;
            fired.extend(
                out.drain(..)
                    .map(|(deadline, payload)| (at, deadline, payload)),
            );
        }
        (fired, wakeups)
    }

    #[test]
    fn fires_exactly_at_its_deadline_and_not_before() {
        let mut wheel = TimingWheel::new(T0);
        wheel.insert(T0 + 1_234, "a");
        assert!(drain(&mut wheel, T0 + 1_233).is_empty());
        assert_eq!(wheel.len(), 1);
        assert_eq!(drain(&mut wheel, T0 + 1_234), vec![(T0 + 1_234, "a")]);
        assert!(wheel.is_empty());
        assert!(drain(&mut wheel, T0 + 10_000).is_empty());
    }

    #[test]
    fn a_late_advance_fires_everything_due_in_deadline_order() {
        let mut wheel = TimingWheel::new(T0);
        for (i, offset) in [70_000u64, 5, 4_100, 5, 63, 64, 262_144, 1]
            .iter()
            .enumerate()
        {
            wheel.insert(T0 + offset, i);
        }
        let fired = drain(&mut wheel, T0 + 100_000);
        let deadlines: Vec<u64> = fired.iter().map(|&(d, _)| d - T0).collect();
        assert_eq!(deadlines, vec![1, 5, 5, 63, 64, 4_100, 70_000]);
        assert_eq!(wheel.len(), 1);
        assert_eq!(drain(&mut wheel, T0 + 262_144), vec![(T0 + 262_144, 6)]);
    }

    #[test]
    fn a_cancelled_entry_returns_its_payload_and_never_fires() {
        let mut wheel = TimingWheel::new(T0);
        let keep = wheel.insert(T0 + 10, "keep");
        let drop = wheel.insert(T0 + 10, "drop");
        let far = wheel.insert(T0 + (1 << 40), "far");
        assert_eq!(wheel.cancel(drop), Some("drop"));
        assert_eq!(wheel.cancel(far), Some("far"));
        assert_eq!(wheel.len(), 1);
        assert_eq!(drain(&mut wheel, u64::MAX), vec![(T0 + 10, "keep")]);
        assert_eq!(wheel.cancel(keep), None);
    }

    #[test]
    fn a_stale_handle_is_a_no_op_after_fire_after_cancel_and_after_its_index_is_reused() {
        let mut wheel = TimingWheel::new(T0);
        let fired = wheel.insert(T0 + 5, 1);
        assert_eq!(drain(&mut wheel, T0 + 5), vec![(T0 + 5, 1)]);
        assert_eq!(wheel.cancel(fired), None);

        // The freed index is reused by the next insert; the old handle must not reach it.
        let reused = wheel.insert(T0 + 50, 2);
        assert_eq!(reused.index, fired.index);
        assert_ne!(reused.generation, fired.generation);
        assert_eq!(wheel.cancel(fired), None);
        assert_eq!(wheel.len(), 1);

        assert_eq!(wheel.cancel(reused), Some(2));
        assert_eq!(wheel.cancel(reused), None);
        let again = wheel.insert(T0 + 60, 3);
        assert_eq!(again.index, fired.index);
        assert_eq!(wheel.cancel(reused), None);
        assert_eq!(wheel.cancel(fired), None);
        assert_eq!(drain(&mut wheel, T0 + 60), vec![(T0 + 60, 3)]);
    }

    #[test]
    fn a_handle_from_beyond_the_slab_is_a_no_op() {
        let mut wheel = TimingWheel::<u8>::new(T0);
        let bogus = TimerHandle {
            index: 7,
            generation: 0,
        };
        assert_eq!(wheel.cancel(bogus), None);
    }

    #[test]
    fn cascades_across_every_level_boundary() {
        // From an unaligned and from an aligned "now", deadlines just before, at and just after
        // each level's span, including the top one (2^36 ms) where the overflow list takes over.
        for start in [T0, T0 & !((1 << 36) - 1), 0, 1 << 36] {
            for level in 1..=LEVELS as u32 {
                let span = 1u64 << (SLOT_BITS * level);
                for offset in [span - 1, span, span + 1] {
                    let deadline = start + offset;
                    // Jump straight there.
                    let mut wheel = TimingWheel::new(start);
                    wheel.insert(deadline, ());
                    assert!(
                        drain(&mut wheel, deadline - 1).is_empty(),
                        "early at {offset}"
                    );
                    assert_eq!(drain(&mut wheel, deadline), vec![(deadline, ())]);

                    // Cross every slot boundary of every level on the way: stop one ms before
                    // and one ms after the start of each level's next slot.
                    let mut wheel = TimingWheel::new(start);
                    wheel.insert(deadline, ());
                    let mut stops: Vec<u64> = (1..=LEVELS as u32)
                        .flat_map(|k| {
                            let width = 1u64 << (SLOT_BITS * (k - 1));
                            let next_slot = (start / width + 1) * width;
                            [next_slot - 1, next_slot, next_slot + 1]
                        })
                        .filter(|&t| t < deadline)
                        .collect();
                    stops.sort_unstable();
                    for t in stops {
                        assert!(
                            drain(&mut wheel, t).is_empty(),
                            "early at {t} for {deadline}"
                        );
                    }
                    assert!(drain(&mut wheel, deadline - 1).is_empty());
                    assert_eq!(drain(&mut wheel, deadline), vec![(deadline, ())]);
                }
            }
        }
    }

    #[test]
    fn far_future_deadlines_beyond_the_top_level_still_fire_on_time() {
        let mut wheel = TimingWheel::new(T0);
        let deadlines = [T0 + (1 << 36), T0 + (1 << 40) + 17, u64::MAX - 1, u64::MAX];
        for (i, &deadline) in deadlines.iter().enumerate() {
            wheel.insert(deadline, i);
        }
        for (i, &deadline) in deadlines.iter().enumerate() {
            assert!(drain(&mut wheel, deadline - 1).is_empty(), "early for {i}");
            assert_eq!(drain(&mut wheel, deadline), vec![(deadline, i)]);
        }
        assert!(wheel.is_empty());
    }

    #[test]
    fn past_deadlines_fire_at_the_next_advance_in_deadline_order() {
        let mut wheel = TimingWheel::new(T0);
        wheel.insert(T0 - 5, "b");
        wheel.insert(T0, "c");
        wheel.insert(T0 - 100, "a");
        wheel.insert(T0 + 1, "d");
        assert_eq!(wheel.next_deadline(), Some(T0 - 100));
        assert_eq!(
            drain(&mut wheel, T0),
            vec![(T0 - 100, "a"), (T0 - 5, "b"), (T0, "c")]
        );
        assert_eq!(drain(&mut wheel, T0 + 1), vec![(T0 + 1, "d")]);
    }

    #[test]
    fn time_never_runs_backwards() {
        let mut wheel = TimingWheel::new(T0);
        wheel.insert(T0 + 10, ());
        assert!(drain(&mut wheel, T0 - 1_000).is_empty());
        assert_eq!(wheel.now_ms(), T0);
        assert!(drain(&mut wheel, T0 + 20).len() == 1);
        assert!(drain(&mut wheel, T0).is_empty());
        assert_eq!(wheel.now_ms(), T0 + 20);
    }

    #[test]
    fn next_deadline_is_exact_within_64_ms_and_a_lower_bound_beyond() {
        let mut wheel = TimingWheel::new(T0);
        assert_eq!(wheel.next_deadline(), None);

        let window_end = (T0 | SLOT_MASK) + 1;
        let near = wheel.insert(window_end - 1, ());
        assert_eq!(wheel.next_deadline(), Some(window_end - 1));
        wheel.cancel(near);
        assert_eq!(wheel.next_deadline(), None);

        let deadline = T0 + 300_000;
        wheel.insert(deadline, ());
        let bound = wheel.next_deadline().expect("one entry is pending");
        assert!(bound <= deadline && bound > T0);
        let (fired, wakeups) = drive_by_next_deadline(&mut wheel);
        assert_eq!(fired, vec![(deadline, deadline, ())]);
        assert!(wakeups <= LEVELS, "{wakeups} wake-ups");
    }

    #[test]
    fn len_counts_pending_entries_only() {
        let mut wheel = TimingWheel::new(T0);
        let handles: Vec<_> = (0..100).map(|i| wheel.insert(T0 + i * 7, i)).collect();
        assert_eq!(wheel.len(), 100);
        for handle in &handles[..10] {
            wheel.cancel(*handle);
        }
        assert_eq!(wheel.len(), 90);
        assert_eq!(drain(&mut wheel, T0 + 349).len(), 40);
        assert_eq!(wheel.len(), 50);
        assert_eq!(drain(&mut wheel, u64::MAX).len(), 50);
        assert!(wheel.is_empty());
    }

    #[test]
    fn dropping_the_wheel_drops_pending_payloads() {
        let payload = Rc::new(());
        let mut wheel = TimingWheel::new(T0);
        for i in 0..10 {
            wheel.insert(T0 + i * 1_000_000, Rc::clone(&payload));
        }
        drop(drain(&mut wheel, T0 + 1_000_000));
        assert_eq!(Rc::strong_count(&payload), 9);
        drop(wheel);
        assert_eq!(Rc::strong_count(&payload), 1);
    }

    #[test]
    fn an_entry_with_a_24_byte_payload_takes_at_most_64_bytes() {
        assert_eq!(mem::size_of::<([u8; 16], u64)>(), 24);
        assert!(TimingWheel::<([u8; 16], u64)>::entry_size() <= 48);
        // (u128, u64) is 32 bytes where u128 is 16-byte aligned; it still fits the budget.
        assert!(TimingWheel::<(u128, u64)>::entry_size() <= 64);
    }

    /// Where an inserted deadline lands relative to the model's now.
    #[derive(Clone, Debug)]
    enum When {
        Past(u64),
        Now,
        Near(u64),
        Horizon(u64),
        Far(u64),
        Any(u64),
        End(u64),
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(When),
        CancelLive(usize),
        CancelStale(usize),
        Advance(u64),
        AdvanceToNextDeadline,
    }

    fn when() -> impl Strategy<Value = When> {
        prop_oneof![
            1 => (1u64..5_000).prop_map(When::Past),
            1 => Just(When::Now),
            4 => (0u64..200).prop_map(When::Near),
            3 => (0u64..400_000).prop_map(When::Horizon),
            1 => ((1u64 << 30)..(1u64 << 42)).prop_map(When::Far),
            1 => any::<u64>().prop_map(When::Any),
            1 => (0u64..100).prop_map(When::End),
        ]
    }

    fn step() -> impl Strategy<Value = u64> {
        prop_oneof![
            1 => Just(0u64),
            4 => 0u64..100,
            3 => 0u64..500_000,
            1 => (1u64 << 30)..(1u64 << 45),
            1 => Just(u64::MAX),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => when().prop_map(Op::Insert),
            2 => any::<usize>().prop_map(Op::CancelLive),
            1 => any::<usize>().prop_map(Op::CancelStale),
            3 => step().prop_map(Op::Advance),
            1 => Just(Op::AdvanceToNextDeadline),
        ]
    }

    fn start() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            (0u64..1 << 20).prop_map(|x| T0 + x),
            (0u64..1 << 20).prop_map(|x| (1u64 << 36) - (1 << 19) + x),
            (0u64..1 << 20).prop_map(|x| u64::MAX - (1 << 41) - x),
        ]
    }

    /// The reference: pending entries by id, plus every handle that went stale.
    struct Model {
        now: u64,
        pending: BTreeMap<u64, (u64, TimerHandle)>,
        stale: Vec<TimerHandle>,
        next_id: u64,
    }

    impl Model {
        fn earliest(&self) -> Option<u64> {
            self.pending.values().map(|&(deadline, _)| deadline).min()
        }

        /// Checks one advance to `now` that handed out `fired`.
        fn advanced(&mut self, now: u64, fired: &[(u64, u64)]) -> Result<(), TestCaseError> {
            self.now = self.now.max(now);
            let mut last = 0;
            for &(deadline, id) in fired {
                let (expected, handle) = self.pending.remove(&id).ok_or_else(|| {
                    TestCaseError::fail(format!("{id} fired twice, after cancel, or never added"))
                })?;
                prop_assert_eq!(deadline, expected, "fired with another deadline");
                prop_assert!(deadline <= self.now, "{id} fired early");
                prop_assert!(deadline >= last, "batch out of order");
                last = deadline;
                self.stale.push(handle);
            }
            if let Some(earliest) = self.earliest() {
                prop_assert!(
                    earliest > self.now,
                    "an entry due at {earliest} was held back"
                );
            }
            Ok(())
        }
    }

    fn check_model(start: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut wheel = TimingWheel::new(start);
        let mut model = Model {
            now: start,
            pending: BTreeMap::new(),
            stale: Vec::new(),
            next_id: 0,
        };
        let mut out = Vec::new();
        for op in ops {
            match op {
                Op::Insert(when) => {
                    let now = model.now;
                    let deadline = match when {
                        When::Past(back) => now.saturating_sub(back),
                        When::Now => now,
                        When::Near(ahead) | When::Horizon(ahead) | When::Far(ahead) => {
                            now.saturating_add(ahead)
                        }
                        When::Any(at) => at,
                        When::End(back) => u64::MAX - back,
                    };
                    let id = model.next_id;
                    model.next_id += 1;
                    let handle = wheel.insert(deadline, id);
                    model.pending.insert(id, (deadline, handle));
                }
                Op::CancelLive(pick) => {
                    if model.pending.is_empty() {
                        continue;
                    }
                    let id = *model
                        .pending
                        .keys()
                        .nth(pick % model.pending.len())
                        .expect("picked within len");
                    let (_, handle) = model.pending.remove(&id).expect("picked a pending id");
                    prop_assert_eq!(wheel.cancel(handle), Some(id));
                    model.stale.push(handle);
                }
                Op::CancelStale(pick) => {
                    if model.stale.is_empty() {
                        continue;
                    }
                    let handle = model.stale[pick % model.stale.len()];
                    prop_assert_eq!(wheel.cancel(handle), None);
                }
                Op::Advance(step) => {
                    let now = model.now.saturating_add(step);
                    wheel.advance(now, &mut out);
                    model.advanced(now, &out)?;
                    out.clear();
                }
                Op::AdvanceToNextDeadline => {
                    let now = wheel.next_deadline().unwrap_or(model.now);
                    wheel.advance(now, &mut out);
                    model.advanced(now, &out)?;
                    out.clear();
                }
            }
            prop_assert_eq!(wheel.len(), model.pending.len());
            prop_assert_eq!(wheel.now_ms(), model.now);
            match (wheel.next_deadline(), model.earliest()) {
                (None, None) => {}
                (Some(bound), Some(earliest)) => {
                    prop_assert!(bound <= earliest, "next_deadline {bound} after {earliest}");
                }
                (got, want) => prop_assert!(false, "next_deadline {got:?}, earliest {want:?}"),
            }
        }
        // Nothing is lost: the end of time hands out everything still pending.
        wheel.advance(u64::MAX, &mut out);
        model.advanced(u64::MAX, &out)?;
        prop_assert!(model.pending.is_empty());
        prop_assert!(wheel.is_empty());
        prop_assert_eq!(wheel.next_deadline(), None);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn behaves_like_a_sorted_map_under_random_inserts_cancels_and_advances(
            start in start(),
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            check_model(start, ops)?;
        }

        #[test]
        fn driving_by_next_deadline_fires_every_entry_exactly_at_its_deadline(
            start in start(),
            offsets in proptest::collection::vec(
                prop_oneof![0u64..100, 0u64..400_000, 0u64..(1 << 40)], 1..100),
        ) {
            let mut wheel = TimingWheel::new(start);
            for (id, &offset) in offsets.iter().enumerate() {
                wheel.insert(start.saturating_add(offset), id);
            }
            let (fired, wakeups) = drive_by_next_deadline(&mut wheel);
            prop_assert_eq!(fired.len(), offsets.len());
            for &(at, deadline, id) in &fired {
                prop_assert_eq!(at, deadline, "fired late or early");
                prop_assert_eq!(deadline, start.saturating_add(offsets[id]));
            }
            let mut distinct: Vec<u64> = fired.iter().map(|&(_, deadline, _)| deadline).collect();
            distinct.dedup();
            prop_assert!(wakeups <= distinct.len() * (LEVELS + 1), "{} wake-ups", wakeups);
        }
    }
}
