//! Helpers shared by the unit tests.

/// A deterministic xorshift64 stream for the fuzz-style parser tests: the
/// same inputs on every run, so a failure reproduces.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Fewer than `max_len` items, each drawn from `alphabet`.
    pub(crate) fn pick<T: Clone>(&mut self, alphabet: &[T], max_len: u64) -> Vec<T> {
        let len = self.next() % max_len;
        (0..len)
            .filter_map(|_| {
                let i = usize::try_from(self.next() % alphabet.len() as u64).ok()?;
                alphabet.get(i).cloned()
            })
            .collect()
    }
}
