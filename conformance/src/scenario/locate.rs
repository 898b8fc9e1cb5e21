//! Where a value is in a JSON document: [`locate`] follows a path of keys and indices through
//! the text and gives the line and column where the value starts, so that a scenario problem
//! found after parsing points at its place in the file.

use super::Seg;

/// The 1-based (line, column) where the value at `path` starts in the JSON `text`, or of the
/// deepest part of `path` that exists. Columns count characters. `None` if the text is not
/// JSON or `path`'s first step is missing.
pub fn locate(text: &str, path: &[Seg]) -> Option<(usize, usize)> {
    let mut cur = Cursor {
        b: text.as_bytes(),
        i: 0,
    };
    let offset = cur.find(path, None)?;
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |n| n + 1);
    let column = text[line_start..offset].chars().count() + 1;
    Some((line, column))
}

/// A forward-only reader over JSON text, enough to find where a value starts.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// Offset of the value at `path` from here; `best` is the deepest value found so far.
    fn find(&mut self, path: &[Seg], best: Option<usize>) -> Option<usize> {
        self.ws();
        let here = self.i;
        let Some((first, rest)) = path.split_first() else {
            return Some(here);
        };
        match *first {
            Seg::Key(k) => {
                self.eat(b'{')?;
                loop {
                    self.ws();
                    if self.peek()? == b'}' {
                        return best;
                    }
                    let (start, end) = self.string()?;
                    let hit = &self.b[start..end] == k.as_bytes();
                    self.eat(b':')?;
                    if hit {
                        self.ws();
                        let at = self.i;
                        return self.find(rest, Some(at)).or(Some(at));
                    }
                    self.skip_value()?;
                    self.ws();
                    if self.peek()? == b',' {
                        self.i += 1;
                    }
                }
            }
            Seg::Idx(n) => {
                self.eat(b'[')?;
                let mut k = 0;
                loop {
                    self.ws();
                    if self.peek()? == b']' {
                        return best;
                    }
                    if k == n {
                        let at = self.i;
                        return self.find(rest, Some(at)).or(Some(at));
                    }
                    self.skip_value()?;
                    k += 1;
                    self.ws();
                    if self.peek()? == b',' {
                        self.i += 1;
                    }
                }
            }
        }
    }

    /// Where the raw bytes between the quotes of a string are (escapes left as they are).
    fn string(&mut self) -> Option<(usize, usize)> {
        self.eat(b'"')?;
        let start = self.i;
        while self.peek()? != b'"' {
            if self.b[self.i] == b'\\' {
                self.i += 1;
            }
            self.i += 1;
        }
        let end = self.i;
        self.i += 1;
        Some((start, end))
    }

    fn skip_value(&mut self) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { b'}' } else { b']' };
                self.i += 1;
                loop {
                    self.ws();
                    if self.peek()? == close {
                        self.i += 1;
                        return Some(());
                    }
                    if open == b'{' {
                        self.string()?;
                        self.eat(b':')?;
                    }
                    self.skip_value()?;
                    self.ws();
                    if self.peek()? == b',' {
                        self.i += 1;
                    }
                }
            }
            _ => {
                while self.i < self.b.len()
                    && !matches!(
                        self.b[self.i],
                        b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'
                    )
                {
                    self.i += 1;
                }
                Some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_finds_nested_values() {
        let text = "{\n  \"a\": [1, {\"b\": \"x\"}],\n  \"c\": {\"d\": 7}\n}\n";
        assert_eq!(locate(text, &[Seg::Key("a")]), Some((2, 8)));
        assert_eq!(
            locate(text, &[Seg::Key("a"), Seg::Idx(1), Seg::Key("b")]),
            Some((2, 18))
        );
        assert_eq!(locate(text, &[Seg::Key("c"), Seg::Key("d")]), Some((3, 14)));
        // A missing leaf falls back to the deepest part that exists.
        assert_eq!(locate(text, &[Seg::Key("c"), Seg::Key("zz")]), Some((3, 8)));
        assert_eq!(locate(text, &[Seg::Key("nope")]), None);
    }
}
