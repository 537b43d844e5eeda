//! `--stop STRING`: ends generation when the decoded text contains a stop
//! string, even one split across tokens, and never shows the stop string or
//! anything after it.
//!
//! Text deltas go through [`StopStrings::push`], which holds back the longest
//! tail that could still grow into a stop string, so streamed output is the
//! same bytes as the final (truncated) text.

#[derive(Debug, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    /// Text seen but not yet handed out (a possible start of a stop string).
    held: String,
    stopped: bool,
}

impl StopStrings {
    /// Empty stop strings are ignored (they would stop before any text).
    pub fn new(stops: &[String]) -> StopStrings {
        StopStrings {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// Whether a stop string has been seen.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Takes a text delta; returns the text that is safe to show now.
    /// After a stop string is found this returns the text before it and then
    /// only empty strings.
    pub fn push(&mut self, delta: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.held.push_str(delta);
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            self.stopped = true;
            self.held.truncate(at);
            return std::mem::take(&mut self.held);
        }
        let keep = self.partial_tail();
        let split = self.held.len() - keep;
        let out = self.held[..split].to_string();
        self.held.drain(..split);
        out
    }

    /// The text still held at the end of generation (no stop string came).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Bytes at the end of `held` that are a proper prefix of some stop
    /// string (on a character boundary).
    fn partial_tail(&self) -> usize {
        let mut best = 0;
        for stop in &self.stops {
            for (i, _) in self.held.char_indices() {
                let tail = &self.held[i..];
                if tail.len() > best && tail.len() < stop.len() && stop.starts_with(tail) {
                    best = tail.len();
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], deltas: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut s = StopStrings::new(&stops);
        let mut out = String::new();
        for d in deltas {
            out.push_str(&s.push(d));
        }
        out.push_str(&s.finish());
        (out, s.stopped())
    }

    #[test]
    fn stop_string_split_across_deltas_is_found_and_cut() {
        assert_eq!(run(&["END"], &["hello E", "N", "D more"]), ("hello ".into(), true));
        assert_eq!(run(&["\n\n"], &["a\n", "\nb"]), ("a".into(), true));
        // The earliest of several stop strings wins.
        assert_eq!(run(&["yy", "x"], &["ab", "yyx"]), ("ab".into(), true));
    }

    #[test]
    fn held_text_is_released_when_it_cannot_become_a_stop() {
        let stops = vec!["END".to_string()];
        let mut s = StopStrings::new(&stops);
        assert_eq!(s.push("hi E"), "hi ");
        assert_eq!(s.push("N"), "");
        assert_eq!(s.push("X"), "ENX");
        assert_eq!(s.finish(), "");
        assert!(!s.stopped());
        assert_eq!(run(&["END"], &["ab", "EN"]), ("abEN".into(), false));
    }

    #[test]
    fn multibyte_text_and_empty_stops() {
        assert_eq!(run(&["€!"], &["a€", "€", "!b"]), ("a€".into(), true));
        assert_eq!(run(&[""], &["abc"]), ("abc".into(), false));
        assert_eq!(run(&[], &["abc"]), ("abc".into(), false));
    }
}
