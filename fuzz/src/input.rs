//! Cutting one fuzz input into the parts a target needs.

/// `data` before the first `sep`, and what follows it (None without one).
pub fn split_once<'a>(data: &'a [u8], sep: &[u8]) -> (&'a [u8], Option<&'a [u8]>) {
    if sep.is_empty() {
        return (data, None);
    }
    match data.windows(sep.len()).position(|w| w == sep) {
        Some(at) => (&data[..at], Some(&data[at + sep.len()..])),
        None => (data, None),
    }
}

/// Frames `tag ‖ u16 little-endian length ‖ payload`, at most `max` of them; a length
/// past the end takes what is left, so any input is a valid sequence.
pub struct Frames<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Frames<'a> {
    pub fn new(data: &'a [u8], max: usize) -> Frames<'a> {
        Frames { rest: data, left: max }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        if self.left == 0 {
            return None;
        }
        let (&tag, rest) = self.rest.split_first()?;
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
            _ => (rest.len(), &[][..]),
        };
        let len = len.min(rest.len());
        let (payload, rest) = rest.split_at(len);
        self.rest = rest;
        self.left -= 1;
        Some((tag, payload))
    }
}

/// Encodes frames the way [`Frames`] reads them (for seeds and tests).
pub fn frame(tag: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    let mut out = vec![tag];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&payload[..usize::from(len)]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_frames() {
        assert_eq!(split_once(b"a--b--c", b"--"), (&b"a"[..], Some(&b"b--c"[..])));
        assert_eq!(split_once(b"abc", b"--"), (&b"abc"[..], None));
        let mut data = frame(1, b"xyz");
        data.extend(frame(2, b""));
        data.extend([3, 9, 0, b'q']);
        let frames: Vec<_> = Frames::new(&data, 8).collect();
        assert_eq!(frames, vec![(1, &b"xyz"[..]), (2, &b""[..]), (3, &b"q"[..])]);
        assert_eq!(Frames::new(&data, 1).count(), 1);
        assert_eq!(Frames::new(&[7], 8).collect::<Vec<_>>(), vec![(7, &b""[..])]);
    }
}
