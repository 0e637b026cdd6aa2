//! The rule SQL's lexer and recursive-descent parser: text to [`Query`].

use serde_json::{Number, Value};

use super::{Expr, Item, MAX_NESTING, MAX_SQL_BYTES, Op, Query, Segment, SqlError};

/// The functions a statement may call, spelled as users may write them in any case.
const FUNCTIONS: &[&str] = &[
    "topic",
    "productKey",
    "deviceName",
    "messageId",
    "timestamp",
    "lower",
    "upper",
    "concat",
    "abs",
];

/// Parses a statement.
pub(super) fn statement(sql: &str) -> Result<Query, SqlError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(SqlError {
            position: MAX_SQL_BYTES,
            message: format!("the statement is longer than {MAX_SQL_BYTES} bytes"),
            over_bound: true,
        });
    }
    let mut p = Parser {
        tokens: tokenize(sql)?,
        at: 0,
        len: sql.len(),
        depth: 0,
    };
    p.keyword("SELECT")?;
    let mut items = vec![p.item()?];
    while p.eat(&Token::Comma) {
        items.push(p.item()?);
    }
    p.keyword("FROM")?;
    let from = match p.peek() {
        Some(Token::Str(s)) => s.clone(),
        _ => return Err(p.error("expected the topic filter in quotes after FROM")),
    };
    p.at += 1;
    crate::topic::Filter::parse(&from).map_err(|e| p.error(&format!("FROM '{from}': {e}")))?;
    let condition = if p.peek_keyword("WHERE") {
        p.at += 1;
        Some(p.expr()?)
    } else {
        None
    };
    if p.at < p.tokens.len() {
        return Err(p.error("unexpected text after the statement"));
    }
    Ok(Query {
        items,
        from,
        condition,
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Num(Number),
    Comma,
    Dot,
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    Star,
    Plus,
    Minus,
    Slash,
    Percent,
    Cmp(Op),
}

fn tokenize(sql: &str) -> Result<Vec<(usize, Token)>, SqlError> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |position, message: &str| SqlError {
        position,
        message: message.into(),
        over_bound: false,
    };
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let token = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'\'' | b'"' => {
                let end = sql[i + 1..]
                    .find(c as char)
                    .ok_or_else(|| err(i, "unterminated string"))?;
                let s = sql[i + 1..i + 1 + end].to_owned();
                i += end + 2;
                Token::Str(s)
            }
            b'0'..=b'9' => {
                while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                    i += 1;
                }
                let text = &sql[start..i];
                let n = match text.parse::<i64>() {
                    Ok(n) => Number::from(n),
                    Err(_) => text
                        .parse::<f64>()
                        .ok()
                        .and_then(Number::from_f64)
                        .ok_or_else(|| err(start, "invalid number"))?,
                };
                Token::Num(n)
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'$')
                {
                    i += 1;
                }
                Token::Word(sql[start..i].to_owned())
            }
            _ => {
                let two = sql.get(i..i + 2).unwrap_or("");
                let (token, len) = match (c, two) {
                    (_, "<=") => (Token::Cmp(Op::Le), 2),
                    (_, ">=") => (Token::Cmp(Op::Ge), 2),
                    (_, "<>") | (_, "!=") => (Token::Cmp(Op::Ne), 2),
                    (b'<', _) => (Token::Cmp(Op::Lt), 1),
                    (b'>', _) => (Token::Cmp(Op::Gt), 1),
                    (b'=', _) => (Token::Cmp(Op::Eq), 1),
                    (b',', _) => (Token::Comma, 1),
                    (b'.', _) => (Token::Dot, 1),
                    (b'(', _) => (Token::Open, 1),
                    (b')', _) => (Token::Close, 1),
                    (b'[', _) => (Token::OpenBracket, 1),
                    (b']', _) => (Token::CloseBracket, 1),
                    (b'*', _) => (Token::Star, 1),
                    (b'+', _) => (Token::Plus, 1),
                    (b'-', _) => (Token::Minus, 1),
                    (b'/', _) => (Token::Slash, 1),
                    (b'%', _) => (Token::Percent, 1),
                    _ => return Err(err(i, "unexpected character")),
                };
                i += len;
                token
            }
        };
        out.push((start, token));
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
    len: usize,
    /// How deeply the parser has nested (see [`MAX_NESTING`]).
    depth: usize,
}

impl Parser {
    /// Parses one nested part with `f`, refusing to go deeper than [`MAX_NESTING`].
    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, SqlError>,
    ) -> Result<T, SqlError> {
        if self.depth == MAX_NESTING {
            let message = format!("nested deeper than {MAX_NESTING} levels");
            return Err(SqlError {
                over_bound: true,
                ..self.error(&message)
            });
        }
        self.depth += 1;
        let parsed = f(self);
        self.depth -= 1;
        parsed
    }

    fn error(&self, message: &str) -> SqlError {
        SqlError {
            position: self.tokens.get(self.at).map_or(self.len, |(p, _)| *p),
            message: message.into(),
            over_bound: false,
        }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(_, t)| t)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).map(|(_, t)| t.clone());
        self.at += 1;
        t
    }

    fn eat(&mut self, t: &Token) -> bool {
        if self.peek() == Some(t) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn peek_keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(k))
    }

    fn keyword(&mut self, k: &str) -> Result<(), SqlError> {
        if self.peek_keyword(k) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected {k}")))
        }
    }

    fn item(&mut self) -> Result<Item, SqlError> {
        if self.eat(&Token::Star) {
            return Ok(Item::All);
        }
        let expr = self.expr()?;
        let name = if self.peek_keyword("AS") {
            self.at += 1;
            match self.next() {
                Some(Token::Word(w)) | Some(Token::Str(w)) => w,
                _ => return Err(self.error("expected a name after AS")),
            }
        } else {
            match &expr {
                Expr::Path(segments) => match segments.iter().rev().find_map(|s| match s {
                    Segment::Key(k) => Some(k.clone()),
                    Segment::Index(_) => None,
                }) {
                    Some(k) => k,
                    None => return Err(self.error("name this item with AS")),
                },
                Expr::Call(f, _) => f.clone(),
                _ => return Err(self.error("name this expression with AS")),
            }
        };
        Ok(Item::Field(expr, name))
    }

    fn expr(&mut self) -> Result<Expr, SqlError> {
        self.binary_level(0)
    }

    /// Precedence climbing: OR < AND < comparison < additive < multiplicative.
    fn binary_level(&mut self, level: u8) -> Result<Expr, SqlError> {
        if level == 2 {
            return self.comparison();
        }
        if level == 5 {
            return self.unary();
        }
        let mut left = self.binary_level(level + 1)?;
        loop {
            let op = match (level, self.peek()) {
                (0, Some(Token::Word(w))) if w.eq_ignore_ascii_case("OR") => Op::Or,
                (1, Some(Token::Word(w))) if w.eq_ignore_ascii_case("AND") => Op::And,
                (3, Some(Token::Plus)) => Op::Add,
                (3, Some(Token::Minus)) => Op::Sub,
                (4, Some(Token::Star)) => Op::Mul,
                (4, Some(Token::Slash)) => Op::Div,
                (4, Some(Token::Percent)) => Op::Rem,
                _ => return Ok(left),
            };
            self.at += 1;
            let right = self.binary_level(level + 1)?;
            left = Expr::Binary(Box::new(left), op, Box::new(right));
        }
    }

    fn comparison(&mut self) -> Result<Expr, SqlError> {
        if self.peek_keyword("NOT") {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.nested(Self::comparison)?)));
        }
        let left = self.binary_level(3)?;
        if self.peek_keyword("IS") {
            self.at += 1;
            let negated = self.peek_keyword("NOT");
            if negated {
                self.at += 1;
            }
            self.keyword("NULL")?;
            return Ok(Expr::IsNull(Box::new(left), !negated));
        }
        if let Some(Token::Cmp(op)) = self.peek() {
            let op = *op;
            self.at += 1;
            let right = self.binary_level(3)?;
            return Ok(Expr::Binary(Box::new(left), op, Box::new(right)));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, SqlError> {
        if self.eat(&Token::Minus) {
            return Ok(Expr::Neg(Box::new(self.nested(Self::unary)?)));
        }
        match self.next() {
            Some(Token::Num(n)) => Ok(Expr::Literal(Value::Number(n))),
            Some(Token::Str(s)) => Ok(Expr::Literal(Value::String(s))),
            Some(Token::Open) => {
                let e = self.nested(Self::expr)?;
                if !self.eat(&Token::Close) {
                    return Err(self.error("expected )"));
                }
                Ok(e)
            }
            Some(Token::Word(w)) => self.word(w),
            _ => {
                self.at -= 1;
                Err(self.error("expected a value, a field or a function"))
            }
        }
    }

    fn word(&mut self, w: String) -> Result<Expr, SqlError> {
        match w.to_ascii_lowercase().as_str() {
            "true" => return Ok(Expr::Literal(Value::Bool(true))),
            "false" => return Ok(Expr::Literal(Value::Bool(false))),
            "null" => return Ok(Expr::Literal(Value::Null)),
            _ => {}
        }
        if self.eat(&Token::Open) {
            let Some(name) = FUNCTIONS.iter().find(|f| f.eq_ignore_ascii_case(&w)) else {
                self.at -= 1;
                return Err(self.error(&format!("unknown function {w}")));
            };
            let mut args = Vec::new();
            if !self.eat(&Token::Close) {
                args.push(self.nested(Self::expr)?);
                while self.eat(&Token::Comma) {
                    args.push(self.nested(Self::expr)?);
                }
                if !self.eat(&Token::Close) {
                    return Err(self.error("expected ) after the arguments"));
                }
            }
            return Ok(Expr::Call((*name).to_owned(), args));
        }
        let mut path = vec![Segment::Key(w)];
        loop {
            if self.eat(&Token::Dot) {
                match self.next() {
                    Some(Token::Word(k)) => path.push(Segment::Key(k)),
                    _ => return Err(self.error("expected a field name after .")),
                }
            } else if self.eat(&Token::OpenBracket) {
                let index = match self.next() {
                    Some(Token::Num(n)) => n.as_u64(),
                    _ => None,
                };
                let Some(index) = index else {
                    return Err(self.error("expected an index in [ ]"));
                };
                if !self.eat(&Token::CloseBracket) {
                    return Err(self.error("expected ]"));
                }
                path.push(Segment::Index(index as usize));
            } else {
                return Ok(Expr::Path(path));
            }
        }
    }
}
