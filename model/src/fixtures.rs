//! Small deterministic data sets for tests of training code here and in the crates built on it (`dp`). Compiled
//! only for this crate's tests and behind the `fixtures` feature, which only dev-dependencies turn on.

/// Two separable blobs around (±2, 0) with deterministic jitter: `n` rows of two features, row-major, and their
/// labels (0 and 1 alternating).
pub fn blobs(n: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..n {
        let c = i % 2;
        let j = ((i * 7919) % 100) as f32 / 100.0 - 0.5;
        x.extend([if c == 1 { 2.0 } else { -2.0 } + j, 0.7 * j]);
        y.push(c as f32);
    }
    (x, y)
}
