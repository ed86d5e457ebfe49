//! A reader of the nats-server configuration format, for `celerity check-config`: maps `{}`,
//! arrays `[]`, `key: value`, `key = value` and `key value`, `#` and `//` comments, quoted strings,
//! block strings `( ... )`, `$VARIABLE` references and `include` lines.
//!
//! No maintained Rust crate reads this format, so this follows nats-server's own lexer
//! (`conf/lex.go`) for the syntax above. It keeps every value as text (the checks read names,
//! addresses and counts, not types) and keeps `include` lines as entries: the caller reads the
//! files they name. It does not check what the server checks (option names, value types), so a file
//! it reads may still be refused by the server.

/// A value: text (a string, number or boolean as written), a variable reference, a map or an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Text(String),
    /// `$NAME`, without the `$`.
    Variable(String),
    Map(Map),
    Array(Vec<Value>),
}

/// A map's entries in the order written; a key written twice keeps both (the last one counts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Map {
    pub(crate) entries: Vec<Entry>,
}

/// One entry of a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    Pair {
        key: String,
        value: Value,
    },
    /// `include <path>` on line `line`, not followed.
    Include {
        path: String,
        line: usize,
    },
}

/// Where and why the text is not in the format.
#[derive(Debug, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub(crate) struct ParseError {
    line: usize,
    column: usize,
    message: String,
}

impl Map {
    /// The value of option `key`, compared without case as nats-server compares option names; the
    /// last one written when there are several.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.pairs()
            .filter(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value)
            .last()
    }

    /// The key and value of each pair, in order.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().filter_map(|entry| match entry {
            Entry::Pair { key, value } => Some((key.as_str(), value)),
            Entry::Include { .. } => None,
        })
    }
}

impl Value {
    /// The map this value is, if it is one.
    pub(crate) fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(map) => Some(map),
            _ => None,
        }
    }
}

/// Reads a whole config file's text.
pub(crate) fn parse(text: &str) -> Result<Map, ParseError> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
    };
    parser.skip_blank();
    // The top level may be wrapped in braces.
    if parser.peek() == Some('{') {
        parser.pos += 1;
        let map = parser.map_body(Some('}'))?;
        parser.skip_blank();
        return match parser.peek() {
            None => Ok(map),
            Some(other) => {
                Err(parser.error(format!("unexpected {other:?} after the top-level map")))
            }
        };
    }
    parser.map_body(None)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn line(&self) -> usize {
        1 + self.chars[..self.pos.min(self.chars.len())]
            .iter()
            .filter(|&&c| c == '\n')
            .count()
    }

    fn error(&self, message: String) -> ParseError {
        let before = &self.chars[..self.pos.min(self.chars.len())];
        let line_start = before
            .iter()
            .rposition(|&c| c == '\n')
            .map_or(0, |at| at + 1);
        ParseError {
            line: self.line(),
            column: before.len() - line_start + 1,
            message,
        }
    }

    fn at_comment(&self) -> bool {
        self.peek() == Some('#') || (self.peek() == Some('/') && self.peek_at(1) == Some('/'))
    }

    fn skip_comment(&mut self) {
        while self.peek().is_some_and(|c| c != '\n') {
            self.pos += 1;
        }
    }

    /// Skips spaces and tabs (not new lines).
    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    /// Skips white space, new lines and comments.
    fn skip_blank(&mut self) {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => self.pos += 1,
                Some(_) if self.at_comment() => self.skip_comment(),
                _ => return,
            }
        }
    }

    /// Entries up to `end` (consumed), or to the end of the text when `end` is `None`.
    fn map_body(&mut self, end: Option<char>) -> Result<Map, ParseError> {
        let mut map = Map::default();
        loop {
            self.skip_blank();
            match self.peek() {
                None if end.is_none() => return Ok(map),
                None => return Err(self.error("a map is not closed with `}`".to_owned())),
                Some(c) if Some(c) == end => {
                    self.pos += 1;
                    return Ok(map);
                }
                Some(',' | ';') => self.pos += 1,
                Some(_) => {
                    map.entries.push(self.entry()?);
                    self.value_end(end)?;
                }
            }
        }
    }

    fn entry(&mut self) -> Result<Entry, ParseError> {
        let line = self.line();
        let (key, quoted) = self.key()?;
        if !quoted
            && key.eq_ignore_ascii_case("include")
            && self.peek().is_some_and(char::is_whitespace)
        {
            self.skip_spaces();
            let path = self.include_path()?;
            return Ok(Entry::Include { path, line });
        }
        self.skip_blank_no_comment();
        if matches!(self.peek(), Some(':' | '=')) {
            self.pos += 1;
            self.skip_spaces();
        }
        if matches!(self.peek(), None | Some('\n' | '\r')) {
            return Err(self.error(format!("no value after the key {key:?}")));
        }
        let value = self.value()?;
        Ok(Entry::Pair { key, value })
    }

    /// Skips white space and new lines between a key and its separator or value.
    fn skip_blank_no_comment(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// A key, and whether it was quoted.
    fn key(&mut self) -> Result<(String, bool), ParseError> {
        if let Some(quote @ ('"' | '\'')) = self.peek() {
            self.pos += 1;
            let start = self.pos;
            while self.peek().is_some_and(|c| c != quote) {
                self.pos += 1;
            }
            if self.peek().is_none() {
                return Err(self.error("a quoted key is not closed".to_owned()));
            }
            let key = self.chars[start..self.pos].iter().collect();
            self.pos += 1;
            return Ok((key, true));
        }
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| !c.is_whitespace() && c != ':' && c != '=')
        {
            self.pos += 1;
        }
        if self.pos == start {
            let found = self
                .peek()
                .map_or("the end".to_owned(), |c| format!("{c:?}"));
            return Err(self.error(format!("expected a key, found {found}")));
        }
        Ok((self.chars[start..self.pos].iter().collect(), false))
    }

    fn include_path(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Some(quote @ ('"' | '\'')) => {
                self.pos += 1;
                self.quoted_raw(quote)
            }
            _ => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| !c.is_whitespace() && c != ';' && c != '}')
                {
                    self.pos += 1;
                }
                match self.pos == start {
                    true => Err(self.error("`include` names no file".to_owned())),
                    false => Ok(self.chars[start..self.pos].iter().collect()),
                }
            }
        }
    }

    /// After a value: spaces, an optional comment, then a new line, `,`, `;`, the end of the
    /// enclosing map (left for it) or of the text.
    fn value_end(&mut self, end: Option<char>) -> Result<(), ParseError> {
        self.skip_spaces();
        if self.at_comment() {
            self.skip_comment();
        }
        match self.peek() {
            None | Some('\n' | '\r' | ',' | ';') => Ok(()),
            Some(c) if Some(c) == end => Ok(()),
            Some(other) => Err(self.error(format!(
                "expected a new line, `,` or `;` after a value, found {other:?}"
            ))),
        }
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        match self.peek() {
            Some('[') => {
                self.pos += 1;
                self.array()
            }
            Some('{') => {
                self.pos += 1;
                Ok(Value::Map(self.map_body(Some('}'))?))
            }
            Some('"') => {
                self.pos += 1;
                self.double_quoted().map(Value::Text)
            }
            Some('\'') => {
                self.pos += 1;
                self.quoted_raw('\'').map(Value::Text)
            }
            Some('(') => {
                self.pos += 1;
                self.block().map(Value::Text)
            }
            _ => self.bare(),
        }
    }

    fn array(&mut self) -> Result<Value, ParseError> {
        let mut values = Vec::new();
        loop {
            self.skip_blank();
            match self.peek() {
                None => return Err(self.error("an array is not closed with `]`".to_owned())),
                Some(']') => {
                    self.pos += 1;
                    return Ok(Value::Array(values));
                }
                Some(',') => self.pos += 1,
                Some(_) => {
                    values.push(self.value()?);
                    self.skip_spaces();
                    if self.at_comment() {
                        self.skip_comment();
                    }
                    match self.peek() {
                        None | Some(',' | ']' | '\n' | '\r') => {}
                        Some(other) => {
                            return Err(self.error(format!(
                                "expected `,` or `]` after an array value, found {other:?}"
                            )));
                        }
                    }
                }
            }
        }
    }

    /// The text up to `quote`, as written (single quotes have no escapes).
    fn quoted_raw(&mut self, quote: char) -> Result<String, ParseError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c != quote) {
            self.pos += 1;
        }
        if self.peek().is_none() {
            return Err(self.error("a quoted string is not closed".to_owned()));
        }
        let text = self.chars[start..self.pos].iter().collect();
        self.pos += 1;
        Ok(text)
    }

    /// A double-quoted string, with its escapes (`\t \n \r \" \\ \xHH`) decoded.
    fn double_quoted(&mut self) -> Result<String, ParseError> {
        let mut bytes = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error("a quoted string is not closed".to_owned())),
                Some('"') => {
                    self.pos += 1;
                    return Ok(String::from_utf8_lossy(&bytes).into_owned());
                }
                Some('\\') => {
                    self.pos += 1;
                    self.escape(&mut bytes)?;
                }
                Some(c) => {
                    let mut buffer = [0; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
                    self.pos += 1;
                }
            }
        }
    }

    fn escape(&mut self, bytes: &mut Vec<u8>) -> Result<(), ParseError> {
        let escaped = self.peek();
        self.pos += 1;
        let byte = match escaped {
            Some('t') => b'\t',
            Some('n') => b'\n',
            Some('r') => b'\r',
            Some('"') => b'"',
            Some('\\') => b'\\',
            Some('x') => {
                let hex: String = self.chars.iter().skip(self.pos).take(2).collect();
                self.pos += 2;
                u8::from_str_radix(&hex, 16).map_err(|_| {
                    self.error(format!("`\\x` needs two hexadecimal digits, not {hex:?}"))
                })?
            }
            other => {
                return Err(self.error(format!(
                    "invalid escape {other:?}: only \\xXX, \\t, \\n, \\r, \\\" and \\\\ are allowed"
                )));
            }
        };
        bytes.push(byte);
        Ok(())
    }

    /// A block string: everything up to a `)` alone at the start of a line.
    fn block(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        loop {
            match self.peek() {
                None => {
                    return Err(self.error("a `(` block is not closed by a line `)`".to_owned()));
                }
                Some('\n')
                    if self.peek_at(1) == Some(')')
                        && matches!(self.peek_at(2), None | Some('\n' | '\r')) =>
                {
                    let text = self.chars[start..self.pos].iter().collect();
                    self.pos += 2;
                    return Ok(text);
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// An unquoted value: up to white space, a new line, `,`, `;`, `]` or `}`.
    fn bare(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| !c.is_whitespace() && !matches!(c, ',' | ';' | ']' | '}'))
        {
            self.pos += 1;
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        if text.is_empty() {
            let found = self
                .peek()
                .map_or("the end".to_owned(), |c| format!("{c:?}"));
            return Err(self.error(format!("expected a value, found {found}")));
        }
        // NOTE: nats-server reads `$2a$...` (a bcrypt hash) as text, not as a variable.
        match text.strip_prefix('$') {
            Some(name) if !name.starts_with("2a$") && !name.is_empty() => {
                Ok(Value::Variable(name.to_owned()))
            }
            _ => Ok(Value::Text(text)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> Value {
        Value::Text(value.to_owned())
    }

    fn pair(key: &str, value: Value) -> Entry {
        Entry::Pair {
            key: key.to_owned(),
            value,
        }
    }

    #[test]
    fn the_three_separators_and_both_comment_kinds_are_read() {
        let map = parse(
            "# a comment\nport: 4222\nhost = 0.0.0.0 // trailing\nserver_name my-server # trailing\n",
        )
        .unwrap();
        assert_eq!(
            map.entries,
            vec![
                pair("port", text("4222")),
                pair("host", text("0.0.0.0")),
                pair("server_name", text("my-server")),
            ]
        );
    }

    #[test]
    fn maps_arrays_and_quoted_strings_nest() {
        let map = parse(
            r#"
authorization {
  users = [
    {user: alice, password: "pa ss\"w\x41rd"}
    { user: 'bob', password: 'it s' }, {user: carol, password: "x"},
  ]
  timeout: 2.5
}
accounts: { $SYS { users: [{user: sys, password: x}] }; "APP": {} }
"#,
        )
        .unwrap();
        let authorization = map.get("AUTHORIZATION").and_then(Value::as_map).unwrap();
        let Some(Value::Array(users)) = authorization.get("users") else {
            panic!("users is an array: {authorization:?}")
        };
        assert_eq!(users.len(), 3);
        let alice = users[0].as_map().unwrap();
        assert_eq!(alice.get("password"), Some(&text("pa ss\"wArd")));
        assert_eq!(users[1].as_map().unwrap().get("user"), Some(&text("bob")));
        assert_eq!(authorization.get("timeout"), Some(&text("2.5")));
        let accounts = map.get("accounts").and_then(Value::as_map).unwrap();
        let names: Vec<&str> = accounts.pairs().map(|(name, _)| name).collect();
        assert_eq!(names, ["$SYS", "APP"]);
    }

    #[test]
    fn variables_bcrypt_hashes_blocks_and_includes_are_kept_apart() {
        let map = parse(
            "listen: $ADDR\npassword: $2a$11$abc\ninclude ./accounts.conf\naccounts { include 'more.conf'; }\nmotd: (\nline one\n)\n",
        )
        .unwrap();
        assert_eq!(map.get("listen"), Some(&Value::Variable("ADDR".to_owned())));
        assert_eq!(map.get("password"), Some(&text("$2a$11$abc")));
        assert!(map.entries.contains(&Entry::Include {
            path: "./accounts.conf".to_owned(),
            line: 3
        }));
        let accounts = map.get("accounts").and_then(Value::as_map).unwrap();
        assert_eq!(
            accounts.entries,
            vec![Entry::Include {
                path: "more.conf".to_owned(),
                line: 4
            }]
        );
        assert_eq!(map.get("motd"), Some(&text("\nline one")));
    }

    #[test]
    fn a_top_level_in_braces_and_a_later_key_that_wins_are_read() {
        let map = parse("{\n  listen: 127.0.0.1:4222, listen: \"0.0.0.0:4222\"\n}\n").unwrap();
        assert_eq!(map.get("listen"), Some(&text("0.0.0.0:4222")));
    }

    #[test]
    fn broken_text_is_an_error_with_its_line_and_column() {
        for (broken, expected) in [
            (
                "accounts {\n  A: {}\n",
                "line 3, column 1: a map is not closed",
            ),
            (
                "listen:\nport: 1",
                "line 1, column 8: no value after the key \"listen\"",
            ),
            ("a: [1, 2", "an array is not closed"),
            ("a: \"open", "a quoted string is not closed"),
            ("a: 1 2", "line 1, column 6: expected a new line"),
            ("a: \"\\q\"", "invalid escape"),
            ("a: (\nno end", "a `(` block is not closed"),
            ("= 1", "expected a key"),
        ] {
            let error = parse(broken).expect_err(broken).to_string();
            assert!(error.contains(expected), "{broken:?}: {error}");
        }
    }

    #[test]
    fn an_empty_file_and_comments_alone_are_an_empty_map() {
        assert_eq!(parse("").unwrap(), Map::default());
        assert_eq!(parse("# nothing\n// here\n").unwrap(), Map::default());
    }
}
