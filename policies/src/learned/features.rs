//! Text → hashed sparse features: word unigrams and bigrams, and character 2–5-grams of the
//! words (which carry across languages, scripts, inflections and typos). Feature values are
//! sublinear counts, L2-normalised; the hash is FNV-1a, so features are the same on every
//! machine and in every build.

/// At most this many characters of a message are read (a WhatsApp message's gist is early).
pub const MAX_CHARS: usize = 1_000;

/// The text as features see it: lower case, curly quotes straightened, everything that is not a
/// letter, digit or apostrophe a single space.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_CHARS * 4));
    let mut space = true;
    for c in text.chars().take(MAX_CHARS) {
        let c = match c {
            '’' | '‘' | 'ʼ' | '`' => '\'',
            c => c,
        };
        // Marks (Devanagari vowel signs, Arabic harakat) belong to their letter.
        if c.is_alphanumeric() || c == '\'' || is_mark(c) {
            for l in c.to_lowercase() {
                out.push(l);
            }
            space = false;
        } else if !space {
            out.push(' ');
            space = true;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// Combining marks of the scripts herd's languages use (not covered by `is_alphanumeric`).
fn is_mark(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036F | 0x0610..=0x061A | 0x064B..=0x065F | 0x0670 | 0x06D6..=0x06ED | 0x0900..=0x0903 | 0x093A..=0x094F | 0x0951..=0x0957 | 0x0962..=0x0963)
}

fn fnv(family: u8, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(family);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            eat(b' ');
        }
        p.bytes().for_each(&mut eat);
    }
    h
}

/// Sparse features of `text`: `(hash, value)` sorted by hash, values L2-normalised. Hashes are
/// full 64-bit; a model takes them modulo its bucket count.
pub fn features(text: &str) -> Vec<(u64, f32)> {
    features_and_words(text).0
}

/// [`features`] and the number of words they were made from.
pub fn features_and_words(text: &str) -> (Vec<(u64, f32)>, usize) {
    let norm = normalize(text);
    let words: Vec<&str> = norm.split(' ').filter(|w| !w.is_empty()).collect();
    let mut hashes: Vec<u64> = Vec::with_capacity(norm.len() * 4);
    let mut words_hashes: Vec<u64> = Vec::with_capacity(words.len() * 2);
    for (i, w) in words.iter().enumerate() {
        words_hashes.push(fnv(b'w', &[w]));
        if let Some(next) = words.get(i + 1) {
            words_hashes.push(fnv(b'b', &[w, next]));
        }
        // Character n-grams of the word with its boundaries: " kill " → " k", "ki", … "ll ".
        let chars: Vec<char> = std::iter::once(' ').chain(w.chars()).chain(std::iter::once(' ')).collect();
        let mut buf = String::new();
        for n in 2..=5usize {
            for win in chars.windows(n) {
                buf.clear();
                buf.extend(win);
                hashes.push(fnv(b'0' + n as u8, &[&buf]));
            }
        }
    }
    // Words and character n-grams are two blocks of equal weight: each is normalised on its
    // own, so the many character n-grams do not drown the words.
    let mut out = block(words_hashes);
    out.extend(block(hashes));
    out.sort_unstable_by_key(|&(h, _)| h);
    let inv = if out.is_empty() { 0.0 } else { (out.iter().map(|(_, v)| v * v).sum::<f32>()).sqrt().recip() };
    out.iter_mut().for_each(|(_, v)| *v *= inv);
    (out, words.len())
}

/// Counts of `hashes` as sublinear values (1 + ln n), L2-normalised, sorted by hash.
fn block(mut hashes: Vec<u64>) -> Vec<(u64, f32)> {
    hashes.sort_unstable();
    let mut out: Vec<(u64, f32)> = Vec::with_capacity(hashes.len());
    for h in hashes {
        match out.last_mut() {
            Some((last, count)) if *last == h => *count += 1.0,
            _ => out.push((h, 1.0)),
        }
    }
    let mut norm2 = 0.0f32;
    for (_, v) in &mut out {
        *v = 1.0 + v.ln();
        norm2 += *v * *v;
    }
    let inv = if norm2 > 0.0 { norm2.sqrt().recip() } else { 0.0 };
    out.iter_mut().for_each(|(_, v)| *v *= inv);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalising_lowercases_straightens_quotes_and_keeps_marks() {
        assert_eq!(normalize("  Don’t KILL   the Process!! "), "don't kill the process");
        assert_eq!(normalize("मैं मरना चाहता हूँ"), "मैं मरना चाहता हूँ");
        assert_eq!(normalize("¿Cómo   estás?"), "cómo estás");
    }

    #[test]
    fn features_are_stable_sorted_and_unit_length() {
        let a = features("How do I kill a Python process?");
        assert_eq!(a, features("how do i kill a python process"));
        assert!(a.windows(2).all(|w| w[0].0 < w[1].0));
        let len: f32 = a.iter().map(|(_, v)| v * v).sum();
        assert!((len - 1.0).abs() < 1e-4, "{len}");
        assert!(features("").is_empty());
        assert!(features("!!!").is_empty());
    }

    #[test]
    fn a_repeated_word_counts_sublinearly() {
        let once = features("bomb");
        let many = features("bomb bomb bomb bomb");
        assert_eq!(once.len() + 1, many.len(), "the bigram bomb bomb is the only new feature");
    }
}
