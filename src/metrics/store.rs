//! The series storage behind `/metrics`, owned by the metrics actor (one writer, no locks, no atomics).
//!
//! The `prometheus` crate keeps every series as its own heap objects (label pairs as strings, an `Arc`ed
//! atomic, a hash-map entry) and renders through a `gather()` copy of everything: about 1.9 KiB per series
//! and 250 ms for 50,000 series here (bench/README.md, "/metrics at scale"). This store keeps, per family,
//! flat columns: the label values of every series as interned ids (`u32`, one string per distinct value,
//! shared by every series that uses it, freed with its last series), the values, the creation time and the
//! last update, and an index from label ids to the series' slot. A counter series with eight labels costs
//! about 70 bytes.
//!
//! Rendering walks the columns family by family into a caller's buffer, a bounded chunk at a time, so
//! `/metrics` streams a large exposition instead of building it whole, and the actor goes back to its
//! updates between chunks. A series never moves while it exists (a removed series leaves a free slot), and
//! a render skips the series made after it began, so a series is never printed twice in one scrape even if
//! it is removed and made again meanwhile.
//!
//! Cardinality: each family holds at most `cap` series; past it a new label set of a counter or histogram
//! folds into the family's one all-`other` series (totals stay exact), a gauge's is dropped, and either is
//! counted per family in `llm_metrics_series_dropped_total`. Series of deleted entities are removed by
//! label value, and series idle longer than a TTL by a periodic sweep.
//!
//! One cohesive thing, about 780 lines: the columns, the index, the interned labels, the free slots, the
//! generations that invalidate handles and the render sequence keep invariants together that no part can
//! keep alone; its tests are in `store/tests.rs`.

use super::catalog::Kind;
use super::text::fmt_f64_into;
use hashbrown::HashTable;
use std::collections::HashMap;
use std::hash::BuildHasher;

/// The label value every label of the over-cap series gets.
pub const OVER_CAP: &str = "other";

/// Slot marker: the slot is free (its series was removed).
const DEAD: u32 = u32::MAX;

/// A family in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FamId(pub u16);

/// A series: family and slot, packed in 8 bytes (`Option<Sid>` too). Valid until the store's `generation`
/// changes (a removal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sid(std::num::NonZeroU64);

impl Sid {
    fn new(fam: u16, slot: u32) -> Sid {
        Sid(std::num::NonZeroU64::MIN.saturating_add(((fam as u64) << 32) | slot as u64))
    }

    fn fam(self) -> usize {
        ((self.0.get() - 1) >> 32) as usize
    }

    fn slot(self) -> usize {
        ((self.0.get() - 1) & 0xffff_ffff) as usize
    }
}

/// Interned label values, escaped once for the exposition, counted by the series that use them.
#[derive(Default)]
struct Strings {
    ids: HashMap<Box<str>, u32>,
    /// By id: the escaped text (`None` for a free id) and how many series slots use it.
    text: Vec<Option<Box<str>>>,
    refs: Vec<u32>,
    free: Vec<u32>,
}

impl Strings {
    fn get(&self, v: &str) -> Option<u32> {
        self.ids.get(v).copied()
    }

    fn intern(&mut self, v: &str) -> u32 {
        if let Some(id) = self.ids.get(v) {
            return *id;
        }
        let escaped = escape(v);
        let id = match self.free.pop() {
            Some(id) => {
                self.text[id as usize] = Some(escaped);
                self.refs[id as usize] = 0;
                id
            }
            None => {
                self.text.push(Some(escaped));
                self.refs.push(0);
                (self.text.len() - 1) as u32
            }
        };
        self.ids.insert(v.into(), id);
        id
    }

    fn release(&mut self, id: u32) {
        let r = &mut self.refs[id as usize];
        *r -= 1;
        if *r == 0 {
            if let Some(text) = self.text[id as usize].take() {
                self.ids.remove(&*unescape(&text));
            }
            self.free.push(id);
        }
    }

    fn text(&self, id: u32) -> &str {
        self.text[id as usize].as_deref().unwrap_or("")
    }
}

fn escape(v: &str) -> Box<str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    let mut out = String::with_capacity(v.len() + 4);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.into()
}

fn unescape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains('\\') {
        return v.into();
    }
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(c) => out.push(c),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// What a family is and how it prints.
pub struct FamilySpec {
    /// The registered name; counters are exposed with `_total` appended.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// Label names in declaration order.
    pub labels: Vec<String>,
    /// Upper bounds of a histogram's finite buckets.
    pub buckets: Vec<f64>,
}

struct Family {
    spec: FamilySpec,
    /// Values per slot: 1, or for a histogram each finite bucket's own count, then the count, then the sum.
    stride: usize,
    /// Label positions in the exposition's (alphabetical) order, each with its printed prefix
    /// (`name="`, with a leading comma after the first).
    order: Vec<(usize, Box<str>)>,
    /// Printed `le` values of the finite buckets.
    le: Vec<Box<str>>,
    /// `# HELP`/`# TYPE` lines of the family and of its `_created` companion.
    header: String,
    created_header: String,
    /// Sample names: the family's (`x_total` for counters), and for histograms `_bucket`, `_count`, `_sum`.
    sample: String,
    bucket: String,
    count: String,
    sum: String,
    created_name: String,
    index: HashTable<u32>,
    /// Label ids, `labels.len()` per slot.
    keys: Vec<u32>,
    values: Vec<f64>,
    created: Vec<f64>,
    /// Seconds since the store began, of the last update.
    touched: Vec<u32>,
    /// The render sequence number current when the series was made; `DEAD` for a free slot.
    born: Vec<u32>,
    free: Vec<u32>,
    live: usize,
}

impl Family {
    fn new(spec: FamilySpec) -> Family {
        let mut order: Vec<usize> = (0..spec.labels.len()).collect();
        order.sort_by(|a, b| spec.labels[*a].cmp(&spec.labels[*b]));
        let order = order
            .into_iter()
            .enumerate()
            .map(|(i, pos)| {
                let comma = if i == 0 { "" } else { "," };
                (pos, format!("{comma}{}=\"", spec.labels[pos]).into())
            })
            .collect();
        let help = spec.help.replace('\\', "\\\\").replace('\n', "\\n");
        let (exposed, kind) = match spec.kind {
            Kind::Counter => (format!("{}_total", spec.name), "counter"),
            Kind::Gauge => (spec.name.to_string(), "gauge"),
            Kind::Histogram => (spec.name.to_string(), "histogram"),
        };
        let created_name = format!("{}_created", spec.name);
        Family {
            stride: match spec.kind {
                Kind::Histogram => spec.buckets.len() + 2,
                _ => 1,
            },
            order,
            le: spec
                .buckets
                .iter()
                .map(|b| {
                    let mut s = String::new();
                    fmt_f64_into(&mut s, *b);
                    s.into()
                })
                .collect(),
            header: format!("# HELP {exposed} {help}\n# TYPE {exposed} {kind}\n"),
            created_header: format!("# HELP {created_name} {help}\n# TYPE {created_name} gauge\n"),
            bucket: format!("{}_bucket", spec.name),
            count: format!("{}_count", spec.name),
            sum: format!("{}_sum", spec.name),
            sample: exposed,
            created_name,
            index: HashTable::new(),
            keys: Vec::new(),
            values: Vec::new(),
            created: Vec::new(),
            touched: Vec::new(),
            born: Vec::new(),
            free: Vec::new(),
            live: 0,
            spec,
        }
    }

    fn width(&self) -> usize {
        self.spec.labels.len()
    }

    fn key(&self, slot: usize) -> &[u32] {
        // Every key written has the family's width (`Store::series` checks), so this slice is in bounds.
        let n = self.width();
        &self.keys[slot * n..slot * n + n]
    }

    fn has_created(&self) -> bool {
        self.spec.kind != Kind::Gauge
    }
}

/// Where a streamed render stands.
#[derive(Clone, Copy, Debug)]
pub struct Cursor {
    fam: usize,
    /// 0: the family's header; 1: its samples; 2: the `_created` header; 3: the `_created` samples.
    phase: u8,
    slot: usize,
    /// Series born at or after this render sequence number are left for the next scrape.
    seq: u32,
}

pub struct Store {
    fams: Vec<Family>,
    strings: Strings,
    hasher: hashbrown::DefaultHashBuilder,
    cap: usize,
    /// The family counting label sets past the cap, by family name.
    dropped: Option<FamId>,
    /// Bumped by every removal: cached `Sid`s must be resolved again.
    generation: u64,
    seq: u32,
    started: std::time::Instant,
    now_s: u32,
    now_unix: f64,
}

impl Store {
    /// `cap`: series per family before new label sets fold into `other`.
    pub fn new(cap: usize) -> Store {
        let mut s = Store {
            fams: Vec::new(),
            strings: Strings::default(),
            hasher: Default::default(),
            cap: cap.max(1),
            dropped: None,
            generation: 0,
            seq: 0,
            started: std::time::Instant::now(),
            now_s: 0,
            now_unix: 0.0,
        };
        s.tick();
        s
    }

    pub fn add(&mut self, spec: FamilySpec) -> FamId {
        self.fams.push(Family::new(spec));
        FamId((self.fams.len() - 1) as u16)
    }

    /// The family that counts updates refused a series of their own past the cap (labels: `metric`).
    pub fn set_dropped_family(&mut self, f: FamId) {
        self.dropped = Some(f);
    }

    /// Reads the clock once for the updates that follow (creation times, last-update times).
    pub fn tick(&mut self) {
        self.now_s = self.started.elapsed().as_secs() as u32;
        self.now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Series in family `f` (tests).
    #[cfg(test)]
    pub fn len(&self, f: FamId) -> usize {
        self.fams[f.0 as usize].live
    }

    fn find(&self, fi: usize, vals: &[&str]) -> Result<u32, Option<Vec<u32>>> {
        let f = &self.fams[fi];
        let mut ids = Vec::with_capacity(vals.len());
        for v in vals {
            match self.strings.get(v) {
                Some(id) => ids.push(id),
                None => return Err(None),
            }
        }
        let hash = self.hasher.hash_one(&ids[..]);
        match f.index.find(hash, |&slot| f.key(slot as usize) == &ids[..]) {
            Some(slot) => Ok(*slot),
            None => Err(Some(ids)),
        }
    }

    /// The series with these label values (in the family's label order), made when missing. Past the cap a
    /// counter or histogram gets the family's `other` series and a gauge gets none.
    pub fn series(&mut self, f: FamId, vals: &[&str]) -> Option<Sid> {
        let fi = f.0 as usize;
        if vals.len() != self.fams[fi].width() {
            // A caller's mistake; a wrong key width would shift every later series' labels.
            debug_assert!(
                false,
                "{}: {} values for {} labels",
                self.fams[fi].spec.name,
                vals.len(),
                self.fams[fi].width()
            );
            return None;
        }
        if let Ok(slot) = self.find(fi, vals) {
            return Some(Sid::new(f.0, slot));
        }
        if self.fams[fi].live >= self.cap && Some(f) != self.dropped {
            let all_other = vals.iter().all(|v| *v == OVER_CAP);
            if let Some(d) = self.dropped {
                let name = self.fams[fi].spec.name;
                if let Some(sid) = self.series(d, &[name]) {
                    self.inc(sid, 1.0);
                }
            }
            if self.fams[fi].spec.kind == Kind::Gauge {
                return None;
            }
            if !all_other {
                let other = vec![OVER_CAP; vals.len()];
                if let Ok(slot) = self.find(fi, &other) {
                    return Some(Sid::new(f.0, slot));
                }
                return Some(self.make(fi, &other));
            }
        }
        Some(self.make(fi, vals))
    }

    fn make(&mut self, fi: usize, vals: &[&str]) -> Sid {
        let ids: Vec<u32> = vals.iter().map(|v| self.strings.intern(v)).collect();
        for id in &ids {
            self.strings.refs[*id as usize] += 1;
        }
        let hash = self.hasher.hash_one(&ids[..]);
        let (now_s, now_unix, seq) = (self.now_s, self.now_unix, self.seq);
        let f = &mut self.fams[fi];
        let n = f.width();
        let stride = f.stride;
        let slot = match f.free.pop() {
            Some(slot) => {
                let s = slot as usize;
                f.keys[s * n..s * n + n].copy_from_slice(&ids);
                f.values[s * stride..s * stride + stride].fill(0.0);
                f.created[s] = now_unix;
                f.touched[s] = now_s;
                f.born[s] = seq;
                slot
            }
            None => {
                f.keys.extend_from_slice(&ids);
                f.values.extend(std::iter::repeat_n(0.0, stride));
                f.created.push(now_unix);
                f.touched.push(now_s);
                f.born.push(seq);
                (f.born.len() - 1) as u32
            }
        };
        f.live += 1;
        let Family { index, keys, .. } = f;
        index.insert_unique(hash, slot, |&s| {
            let s = s as usize;
            self.hasher.hash_one(&keys[s * n..s * n + n])
        });
        Sid::new(fi as u16, slot)
    }

    pub fn inc(&mut self, s: Sid, v: f64) {
        let f = &mut self.fams[s.fam()];
        f.values[s.slot()] += v;
        f.touched[s.slot()] = self.now_s;
    }

    pub fn set(&mut self, s: Sid, v: f64) {
        let f = &mut self.fams[s.fam()];
        f.values[s.slot()] = v;
        f.touched[s.slot()] = self.now_s;
    }

    pub fn observe(&mut self, s: Sid, v: f64) {
        let f = &mut self.fams[s.fam()];
        let nb = f.spec.buckets.len();
        let base = s.slot() * f.stride;
        let b = f.spec.buckets.partition_point(|ub| *ub < v);
        if b < nb {
            f.values[base + b] += 1.0;
        }
        f.values[base + nb] += 1.0;
        f.values[base + nb + 1] += v;
        f.touched[s.slot()] = self.now_s;
    }

    /// About how many heap bytes the series and strings take (capacity, not length).
    pub fn heap_bytes(&self) -> usize {
        let strings = self.strings.ids.capacity() * 40
            + self.strings.text.capacity() * 16
            + self.strings.refs.capacity() * 4
            + self
                .strings
                .text
                .iter()
                .flatten()
                .map(|t| t.len())
                .sum::<usize>()
                * 2;
        let fams: usize = self
            .fams
            .iter()
            .map(|f| {
                f.index.capacity() * 5
                    + f.keys.capacity() * 4
                    + f.values.capacity() * 8
                    + f.created.capacity() * 8
                    + f.touched.capacity() * 4
                    + f.born.capacity() * 4
                    + f.free.capacity() * 4
            })
            .sum();
        strings + fams
    }

    /// The value of a counter or gauge series (tests).
    #[cfg(test)]
    pub fn value(&self, s: Sid) -> f64 {
        let f = &self.fams[s.fam()];
        f.values[s.slot() * f.stride]
    }

    fn remove_slot(&mut self, fi: usize, slot: usize) {
        let f = &mut self.fams[fi];
        let n = f.width();
        let ids: Vec<u32> = f.key(slot).to_vec();
        let hash = self.hasher.hash_one(&ids[..]);
        if let Ok(e) = f.index.find_entry(hash, |&s| s as usize == slot) {
            e.remove();
        }
        f.born[slot] = DEAD;
        f.free.push(slot as u32);
        f.live -= 1;
        f.keys[slot * n..slot * n + n].fill(0);
        for id in ids {
            self.strings.release(id);
        }
        self.generation += 1;
    }

    /// Removes one series, if it exists.
    pub fn remove(&mut self, f: FamId, vals: &[&str]) -> bool {
        if vals.len() != self.fams[f.0 as usize].width() {
            return false;
        }
        match self.find(f.0 as usize, vals) {
            Ok(slot) => {
                self.remove_slot(f.0 as usize, slot as usize);
                true
            }
            Err(_) => false,
        }
    }

    /// Removes, from every family that has label `label`, the series whose value is `value`, except in
    /// the families listed in `keep`. Returns how many were removed.
    pub fn remove_matching(&mut self, label: &str, value: &str, keep: &[FamId]) -> usize {
        let Some(id) = self.strings.get(value) else {
            return 0;
        };
        let mut removed = 0;
        for fi in 0..self.fams.len() {
            if keep.contains(&FamId(fi as u16)) {
                continue;
            }
            let Some(pos) = self.fams[fi].spec.labels.iter().position(|l| l == label) else {
                continue;
            };
            let slots: Vec<usize> = {
                let f = &self.fams[fi];
                (0..f.born.len())
                    .filter(|&s| f.born[s] != DEAD && f.key(s)[pos] == id)
                    .collect()
            };
            for s in slots {
                self.remove_slot(fi, s);
                removed += 1;
            }
        }
        removed
    }

    /// Removes, from every family that has label `required`, the series whose labels match every pair of
    /// `pairs` the family has. Returns how many were removed.
    pub fn remove_where(&mut self, pairs: &[(&str, &str)], required: &str) -> usize {
        let mut removed = 0;
        for fi in 0..self.fams.len() {
            let labels = &self.fams[fi].spec.labels;
            if !labels.iter().any(|l| l == required) {
                continue;
            }
            let mut want: Vec<(usize, u32)> = Vec::new();
            for (name, value) in pairs {
                if let Some(pos) = labels.iter().position(|l| l == name) {
                    match self.strings.get(value) {
                        Some(id) => want.push((pos, id)),
                        // A value no series has: nothing in this family matches.
                        None => want.clear(),
                    }
                    if want.is_empty() {
                        break;
                    }
                }
            }
            if want.is_empty() {
                continue;
            }
            let slots: Vec<usize> = {
                let f = &self.fams[fi];
                (0..f.born.len())
                    .filter(|&s| {
                        f.born[s] != DEAD && want.iter().all(|(p, id)| f.key(s)[*p] == *id)
                    })
                    .collect()
            };
            for s in slots {
                self.remove_slot(fi, s);
                removed += 1;
            }
        }
        removed
    }

    /// Removes the series of the families in `fams` not updated for `ttl_s` seconds; with `nonempty`, only
    /// those whose label of that name is set (families without it are skipped). Returns how many.
    pub fn sweep(&mut self, fams: &[FamId], ttl_s: u32, nonempty: Option<&str>) -> usize {
        let now = self.started.elapsed().as_secs() as u32;
        let empty = self.strings.get("");
        let mut removed = 0;
        for f in fams {
            let fi = f.0 as usize;
            let pos = match nonempty {
                None => None,
                Some(label) => match self.fams[fi].spec.labels.iter().position(|l| l == label) {
                    Some(p) => Some(p),
                    None => continue,
                },
            };
            let slots: Vec<usize> = {
                let f = &self.fams[fi];
                (0..f.born.len())
                    .filter(|&s| {
                        f.born[s] != DEAD
                            && now.saturating_sub(f.touched[s]) > ttl_s
                            && pos.is_none_or(|p| Some(f.key(s)[p]) != empty)
                    })
                    .collect()
            };
            for s in slots {
                self.remove_slot(fi, s);
                removed += 1;
            }
        }
        removed
    }

    /// Calls `seen` with every value label `label` has in the families in `fams` (to rebuild a bounded
    /// label's admitted set after a sweep).
    pub fn values_of(&self, fams: &[FamId], label: &str, mut seen: impl FnMut(&str)) {
        for f in fams {
            let f = &self.fams[f.0 as usize];
            let Some(pos) = f.spec.labels.iter().position(|l| l == label) else {
                continue;
            };
            for s in 0..f.born.len() {
                if f.born[s] != DEAD {
                    seen(&unescape(self.strings.text(f.key(s)[pos])));
                }
            }
        }
    }

    /// Begins a render: series made from now on wait for the next scrape.
    pub fn begin_render(&mut self) -> Cursor {
        if self.seq >= DEAD - 1 {
            // Four billion scrapes later: every live series counts as made before the next render.
            for f in &mut self.fams {
                for b in f.born.iter_mut().filter(|b| **b != DEAD) {
                    *b = 0;
                }
            }
            self.seq = 0;
        }
        self.seq += 1;
        Cursor {
            fam: 0,
            phase: 0,
            slot: 0,
            seq: self.seq,
        }
    }

    /// Appends the exposition from `cur` on until `out` holds about `limit` bytes. Returns `None` once
    /// every family is written.
    pub fn render_chunk(&self, mut cur: Cursor, out: &mut String, limit: usize) -> Option<Cursor> {
        while cur.fam < self.fams.len() {
            let f = &self.fams[cur.fam];
            match cur.phase {
                0 => {
                    out.push_str(&f.header);
                    cur.phase = 1;
                    cur.slot = 0;
                }
                1 | 3 => {
                    let created = cur.phase == 3;
                    while cur.slot < f.born.len() {
                        if out.len() >= limit {
                            return Some(cur);
                        }
                        let s = cur.slot;
                        cur.slot += 1;
                        let born = f.born[s];
                        if born == DEAD || born >= cur.seq {
                            continue;
                        }
                        if created {
                            self.line(out, f, &f.created_name, s, None, f.created[s]);
                        } else {
                            self.samples(out, f, s);
                        }
                    }
                    if !created && f.has_created() {
                        cur.phase = 2;
                    } else {
                        cur.fam += 1;
                        cur.phase = 0;
                    }
                }
                _ => {
                    out.push_str(&f.created_header);
                    cur.phase = 3;
                    cur.slot = 0;
                }
            }
        }
        None
    }

    fn samples(&self, out: &mut String, f: &Family, s: usize) {
        let base = s * f.stride;
        match f.spec.kind {
            Kind::Counter | Kind::Gauge => self.line(out, f, &f.sample, s, None, f.values[base]),
            Kind::Histogram => {
                // The label block is the same on every line of the series: written once, copied after.
                let key = f.key(s);
                let mut block = String::new();
                for (pos, prefix) in &f.order {
                    block.push_str(prefix);
                    block.push_str(self.strings.text(key[*pos]));
                    block.push('"');
                }
                let nb = f.spec.buckets.len();
                let mut cumulative = 0.0;
                for b in 0..=nb {
                    let (le, v) = if b < nb {
                        cumulative += f.values[base + b];
                        (&*f.le[b], cumulative)
                    } else {
                        ("+Inf", f.values[base + nb])
                    };
                    out.push_str(&f.bucket);
                    out.push('{');
                    if !block.is_empty() {
                        out.push_str(&block);
                        out.push(',');
                    }
                    out.push_str("le=\"");
                    out.push_str(le);
                    out.push_str("\"} ");
                    fmt_f64_into(out, v);
                    out.push('\n');
                }
                let tail = |out: &mut String, name: &str, v: f64| {
                    out.push_str(name);
                    if !block.is_empty() {
                        out.push('{');
                        out.push_str(&block);
                        out.push('}');
                    }
                    out.push(' ');
                    fmt_f64_into(out, v);
                    out.push('\n');
                };
                tail(out, &f.count, f.values[base + nb]);
                tail(out, &f.sum, f.values[base + nb + 1]);
            }
        }
    }

    fn line(&self, out: &mut String, f: &Family, name: &str, s: usize, le: Option<&str>, v: f64) {
        out.push_str(name);
        let key = f.key(s);
        if !f.order.is_empty() || le.is_some() {
            out.push('{');
            for (pos, prefix) in &f.order {
                out.push_str(prefix);
                out.push_str(self.strings.text(key[*pos]));
                out.push('"');
            }
            if let Some(le) = le {
                if !f.order.is_empty() {
                    out.push(',');
                }
                out.push_str("le=\"");
                out.push_str(le);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        fmt_f64_into(out, v);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests;
