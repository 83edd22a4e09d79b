//! Numbers as Terraform holds them: go-cty's `*big.Float`, a binary
//! floating-point value with its own precision (mantissa bits), rounded to
//! nearest even. Literals, `tonumber` and `jsondecode` parse with
//! `big.ParseFloat(s, 10, 512, ToNearestEven)`; arithmetic follows
//! go-cty's `Value.Add` / `Multiply` / `Divide` / `Modulo` (each result's
//! precision is the larger operand's); a number becomes text with
//! `Text('f', -1)` (the shortest decimal that reads back to the same
//! value at its precision), so `"${1/3}"` is 0.333... to 155 digits, as in
//! Terraform.
//!
//! The algorithms are Go's `math/big` ones (`Float.scan`, `pow5`,
//! `roundShortest`, `decimal.round`, `Float.Format`, `Int.Format`),
//! written on `num-bigint`, so every digit matches, rounding quirks
//! included. Infinities are not held: a division by zero is refused where
//! it is made. Magnitudes are bounded (see [`MAX_DECIMAL_EXP`]) so a
//! configuration cannot ask for a number whose text has millions of digits.

use num_bigint::{BigInt, BigUint, Sign};
use num_traits::{ToPrimitive, Zero};
use std::cmp::Ordering;

/// go-cty's precision for numbers parsed from text (bits of mantissa).
pub const PREC: u32 = 512;

/// Decimal exponents past this (either way) are refused as not supported:
/// Terraform would print a number with that many digits.
pub const MAX_DECIMAL_EXP: i64 = 10_000;
/// The same bound in binary exponent terms (10^10000 ~ 2^33220).
const MAX_BIN_EXP: i64 = 33_300;

/// A finite number: `(-1)^neg * mant * 2^exp`, `mant` odd (or zero, then
/// `exp` is 0), with the precision it is held at (go-cty's `Prec()`).
#[derive(Clone, Debug)]
pub struct Number {
    neg: bool,
    mant: BigUint,
    exp: i64,
    prec: u32,
}

/// Why a number operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumError {
    /// The result's magnitude is past what standby supports.
    Range,
    /// Division by zero (Terraform: an infinity, or an error for 0/0).
    DivZero,
    /// `inf` or `Inf` (Go reads it as an infinity; standby holds none).
    Infinity,
}

impl std::fmt::Display for NumError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NumError::Range => write!(
                f,
                "numbers beyond 1e{MAX_DECIMAL_EXP} (or closer to zero than 1e-{MAX_DECIMAL_EXP}) are not supported by standby"
            ),
            NumError::DivZero => f.write_str("division by zero"),
            NumError::Infinity => f.write_str(
                "infinities are not supported by standby (Terraform reads \"inf\" as an infinity, which no DR setting can use)",
            ),
        }
    }
}

/// Round `mant * 2^exp` to `prec` bits, to nearest even (Go's
/// `ToNearestEven`). `sticky` says the true value is a little above
/// `mant * 2^exp` (bits lost below it), for division.
fn round(neg: bool, mut mant: BigUint, mut exp: i64, prec: u32) -> Number {
    if mant.is_zero() {
        return Number {
            neg,
            mant,
            exp: 0,
            prec,
        };
    }
    let bits = mant.bits();
    if bits > u64::from(prec) {
        let k = bits - u64::from(prec);
        let half = mant.bit(k - 1);
        let below = mant.trailing_zeros().unwrap_or(0) < k - 1;
        mant >>= k;
        exp += k as i64;
        if half && (below || mant.bit(0)) {
            mant += 1u32;
        }
    }
    let tz = mant.trailing_zeros().unwrap_or(0);
    mant >>= tz;
    exp += tz as i64;
    Number {
        neg,
        mant,
        exp,
        prec,
    }
}

fn pow5(n: u64) -> BigUint {
    BigUint::from(5u32).pow(n as u32)
}

/// A number's exact decimal digits (no trailing zeros) and the position of
/// the decimal point: value = 0.DIGITS * 10^exp (Go's `decimal`).
#[derive(Clone, Debug)]
struct Decimal {
    mant: Vec<u8>,
    exp: i64,
}

impl Decimal {
    fn new(m: &BigUint, e: i64) -> Decimal {
        if m.is_zero() {
            return Decimal {
                mant: Vec::new(),
                exp: 0,
            };
        }
        let (n, shift) = if e >= 0 {
            (m << (e as u64), 0i64)
        } else {
            (m * pow5((-e) as u64), e)
        };
        let mut mant = n.to_str_radix(10).into_bytes();
        let exp = mant.len() as i64 + shift;
        while mant.last() == Some(&b'0') {
            mant.pop();
        }
        Decimal { mant, exp }
    }

    fn at(&self, i: i64) -> u8 {
        if i >= 0 && (i as usize) < self.mant.len() {
            self.mant[i as usize]
        } else {
            b'0'
        }
    }

    fn should_round_up(&self, n: usize) -> bool {
        if self.mant[n] == b'5' && n + 1 == self.mant.len() {
            return n > 0 && (self.mant[n - 1] - b'0') & 1 != 0;
        }
        self.mant[n] >= b'5'
    }

    fn round(&mut self, n: i64) {
        if n < 0 || n as usize >= self.mant.len() {
            return;
        }
        if self.should_round_up(n as usize) {
            self.round_up(n)
        } else {
            self.round_down(n)
        }
    }

    fn round_up(&mut self, n: i64) {
        if n < 0 || n as usize >= self.mant.len() {
            return;
        }
        let mut n = n as usize;
        while n > 0 && self.mant[n - 1] >= b'9' {
            n -= 1;
        }
        if n == 0 {
            self.mant.truncate(1);
            self.mant[0] = b'1';
            self.exp += 1;
            return;
        }
        self.mant[n - 1] += 1;
        self.mant.truncate(n);
    }

    fn round_down(&mut self, n: i64) {
        if n < 0 || n as usize >= self.mant.len() {
            return;
        }
        self.mant.truncate(n as usize);
        while self.mant.last() == Some(&b'0') {
            self.mant.pop();
        }
        if self.mant.is_empty() {
            self.exp = 0;
        }
    }
}

impl Number {
    fn zero(neg: bool, prec: u32) -> Number {
        Number {
            neg,
            mant: BigUint::zero(),
            exp: 0,
            prec,
        }
    }

    /// go-cty's `NumberIntVal`: precision 64.
    pub fn from_i64(i: i64) -> Number {
        round(i < 0, BigUint::from(i.unsigned_abs()), 0, 64)
    }

    /// `new(big.Float).SetInt(i)`: precision max(bits, 64).
    pub fn from_bigint(i: &BigInt) -> Number {
        let m = i.magnitude().clone();
        let prec = (m.bits() as u32).max(64);
        round(i.sign() == Sign::Minus, m, 0, prec)
    }

    /// go-cty's `NumberFloatVal`: precision 53. `None` for an infinity or NaN.
    pub fn from_f64(f: f64) -> Option<Number> {
        if !f.is_finite() {
            return None;
        }
        let bits = f.to_bits();
        let neg = bits >> 63 == 1;
        let e = ((bits >> 52) & 0x7ff) as i64;
        let frac = bits & ((1u64 << 52) - 1);
        let (m, e) = if e == 0 {
            (frac, -1074)
        } else {
            (frac | (1u64 << 52), e - 1075)
        };
        Some(round(neg, BigUint::from(m), e, 53))
    }

    /// The value as the nearest f64 (Go's `Float64()`), infinite past the
    /// float range.
    pub fn to_f64(&self) -> f64 {
        // The exact decimal form, which Rust's parser rounds correctly.
        let d = Decimal::new(&self.mant, self.exp);
        let sign = if self.neg { "-" } else { "" };
        if d.mant.is_empty() {
            return if self.neg { -0.0 } else { 0.0 };
        }
        let digits = std::str::from_utf8(&d.mant).unwrap_or("0");
        format!("{sign}0.{digits}e{}", d.exp)
            .parse()
            .unwrap_or(f64::NAN)
    }

    /// Parse as go-cty's `ParseNumberVal` (`big.ParseFloat(s, 10, 512,
    /// ToNearestEven)`): optional sign, digits with an optional point, an
    /// optional `e`/`E` (decimal) or `p`/`P` (binary) exponent. `None` when
    /// `s` is not such a number; `Err` when it is past the supported range
    /// or an infinity (`inf`, `-Inf`), which standby does not hold.
    pub fn parse(s: &str) -> Option<Result<Number, NumError>> {
        let b = s.as_bytes();
        let mut i = 0;
        let neg = match b.first() {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        // Go's `big.ParseFloat` reads `Inf` and `inf` (with a sign).
        if matches!(&s[i..], "Inf" | "inf") {
            return Some(Err(NumError::Infinity));
        }
        let mut digits = String::new();
        let mut fcount: i64 = 0;
        let mut point = false;
        while i < b.len() {
            match b[i] {
                c @ b'0'..=b'9' => {
                    digits.push(c as char);
                    if point {
                        fcount += 1;
                    }
                }
                b'.' if !point => point = true,
                _ => break,
            }
            i += 1;
        }
        if digits.is_empty() {
            return None;
        }
        let (mut exp10, mut exp2) = (0i64, 0i64);
        if i < b.len() {
            let binary = match b[i] {
                b'e' | b'E' => false,
                b'p' | b'P' => true,
                _ => return None,
            };
            i += 1;
            let eneg = match b.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if start == i || i != b.len() {
                return None;
            }
            // Go refuses an exponent past int64, or one whose binary
            // exponent leaves int32 ("a number is required" in go-cty).
            let e: i64 = s[start..i].parse().ok()?;
            if e.unsigned_abs() > u64::from(u32::MAX / 2) {
                return None;
            }
            let e = if eneg { -e } else { e };
            if binary {
                exp2 = e;
            } else {
                exp10 = e;
            }
        }
        let d: BigUint = digits.parse().ok()?;
        if d.is_zero() {
            return Some(Ok(Number::zero(neg, PREC)));
        }
        let exp5 = exp10 - fcount;
        let e2 = exp5.saturating_add(exp2);
        let magnitude = (digits.trim_start_matches('0').len() as i64).saturating_add(exp5);
        if !(-MAX_DECIMAL_EXP..=MAX_DECIMAL_EXP).contains(&magnitude)
            || !(-MAX_BIN_EXP * 2..=MAX_BIN_EXP * 2).contains(&exp2)
        {
            return Some(Err(NumError::Range));
        }
        // Go's Float.scan: z = d * 2^(exp5 + exp2) (not yet rounded), then
        // multiplied or divided by 5^|exp5| computed at 576 bits by pow5.
        if exp5 == 0 {
            return Some(round(neg, d, e2, PREC).checked());
        }
        let p = go_pow5(exp5.unsigned_abs(), PREC + 64);
        let z = Number {
            neg,
            mant: d,
            exp: e2,
            prec: PREC,
        };
        let r = if exp5 > 0 {
            let mut r = z.mul_exact(&p);
            r = round(r.neg, r.mant, r.exp, PREC);
            r
        } else {
            quo(&z, &p, PREC)
        };
        Some(r.checked())
    }

    /// Refuse magnitudes past the supported range.
    fn checked(self) -> Result<Number, NumError> {
        if self.mant.is_zero() {
            return Ok(self);
        }
        let top = self.exp + self.mant.bits() as i64;
        if !(-MAX_BIN_EXP..=MAX_BIN_EXP).contains(&top) {
            return Err(NumError::Range);
        }
        Ok(self)
    }

    fn mul_exact(&self, o: &Number) -> Number {
        Number {
            neg: self.neg != o.neg,
            mant: &self.mant * &o.mant,
            exp: self.exp + o.exp,
            prec: self.prec,
        }
    }

    /// `-0` (go-cty keeps the sign of a zero: `-0` prints as `-0`).
    pub fn is_neg_zero(&self) -> bool {
        self.neg && self.mant.is_zero()
    }

    pub fn is_zero(&self) -> bool {
        self.mant.is_zero()
    }

    /// -1, 0 or 1 (zero of either sign is 0).
    pub fn sign(&self) -> i32 {
        match (self.mant.is_zero(), self.neg) {
            (true, _) => 0,
            (false, true) => -1,
            (false, false) => 1,
        }
    }

    pub fn is_int(&self) -> bool {
        self.mant.is_zero() || self.exp >= 0
    }

    /// `x + y` as go-cty: at the larger precision; `x - x` is +0.
    pub fn add(&self, y: &Number) -> Result<Number, NumError> {
        let prec = self.prec.max(y.prec);
        if self.is_zero() && y.is_zero() {
            return Ok(Number::zero(self.neg && y.neg, prec));
        }
        if y.is_zero() {
            return Ok(Number {
                prec,
                ..self.clone()
            });
        }
        if self.is_zero() {
            return Ok(Number { prec, ..y.clone() });
        }
        let e = self.exp.min(y.exp);
        let a = &self.mant << ((self.exp - e) as u64);
        let b = &y.mant << ((y.exp - e) as u64);
        let r = if self.neg == y.neg {
            round(self.neg, a + b, e, prec)
        } else {
            match a.cmp(&b) {
                Ordering::Greater => round(self.neg, a - b, e, prec),
                Ordering::Less => round(y.neg, b - a, e, prec),
                Ordering::Equal => Number::zero(false, prec),
            }
        };
        r.checked()
    }

    /// `x - y` (go-cty: `x.Add(y.Negate())`).
    pub fn sub(&self, y: &Number) -> Result<Number, NumError> {
        self.add(&y.neg())
    }

    pub fn neg(&self) -> Number {
        Number {
            neg: !self.neg,
            ..self.clone()
        }
    }

    pub fn abs(&self) -> Number {
        Number {
            neg: false,
            ..self.clone()
        }
    }

    /// `x * y` as go-cty's `Multiply`: rounded to 512 bits, held at the
    /// larger of the operands' precisions and the product's own.
    pub fn mul(&self, y: &Number) -> Result<Number, NumError> {
        let p = self.mul_exact(y);
        let r = round(p.neg, p.mant, p.exp, PREC);
        let min_prec = r.mant.bits() as u32;
        let prec = self.prec.max(y.prec).max(min_prec);
        Number { prec, ..r }.checked()
    }

    /// `x / y` as go-cty's `Divide` (Go's `Quo`, correctly rounded at the
    /// larger precision).
    pub fn div(&self, y: &Number) -> Result<Number, NumError> {
        if y.is_zero() {
            return Err(NumError::DivZero);
        }
        quo(self, y, self.prec.max(y.prec)).checked()
    }

    /// `x % y` as go-cty's `Modulo`: `x - y * trunc(x / y)`, each step
    /// rounded at x's precision; the sign is the dividend's; `x % 0` is x.
    pub fn rem(&self, y: &Number) -> Result<Number, NumError> {
        if y.is_zero() {
            return Ok(self.clone());
        }
        let q = self.div(y)?;
        let (i, _) = q.trunc();
        let p = self.prec;
        let w = Number::from_bigint(&i);
        let w = round(w.neg, w.mant, w.exp, p);
        let w = y.mul_exact(&w);
        let w = round(w.neg, w.mant, w.exp, p);
        let r = self.add(&w.neg())?;
        Ok(round(r.neg, r.mant, r.exp, p))
    }

    /// Go's `Int`: x truncated toward zero, and how that compares with x
    /// (`Less`: the result is below x).
    pub fn trunc(&self) -> (BigInt, Ordering) {
        if self.is_int() {
            let m = &self.mant << (self.exp.max(0) as u64);
            let s = if self.neg { Sign::Minus } else { Sign::Plus };
            return (BigInt::from_biguint(s, m), Ordering::Equal);
        }
        let m = &self.mant >> ((-self.exp) as u64);
        let s = if self.neg { Sign::Minus } else { Sign::Plus };
        let acc = if self.neg {
            Ordering::Greater
        } else {
            Ordering::Less
        };
        (BigInt::from_biguint(s, m), acc)
    }

    /// `floor` as go-cty (the result keeps x's precision).
    pub fn floor(&self) -> Number {
        let (mut i, acc) = self.trunc();
        if acc == Ordering::Greater {
            i -= 1;
        }
        self.with_int(&i)
    }

    /// `ceil` as go-cty.
    pub fn ceil(&self) -> Number {
        let (mut i, acc) = self.trunc();
        if acc == Ordering::Less {
            i += 1;
        }
        self.with_int(&i)
    }

    /// `f.SetInt(i)` on a float of x's precision.
    fn with_int(&self, i: &BigInt) -> Number {
        if i.is_zero() {
            // Go's SetInt of 0 gives +0.
            return Number::zero(false, self.prec);
        }
        round(i.sign() == Sign::Minus, i.magnitude().clone(), 0, self.prec)
    }

    /// The value as an i64 when it is a whole number in range.
    pub fn to_i64(&self) -> Option<i64> {
        let (i, acc) = self.trunc();
        if acc != Ordering::Equal {
            return None;
        }
        i.to_i64()
    }

    /// Go's `Int64()` accuracy rule for go-cty's "whole number" checks:
    /// the value as i64 only when exact.
    pub fn as_usize(&self) -> Option<usize> {
        self.to_i64().and_then(|i| usize::try_from(i).ok())
    }

    /// Numeric order (Go's `Cmp`): -0 equals +0.
    pub fn compare(&self, y: &Number) -> Ordering {
        match (self.sign(), y.sign()) {
            (a, b) if a != b => a.cmp(&b),
            (0, _) => Ordering::Equal,
            (s, _) => {
                let e = self.exp.min(y.exp);
                let a = &self.mant << ((self.exp - e) as u64);
                let b = &y.mant << ((y.exp - e) as u64);
                if s > 0 { a.cmp(&b) } else { b.cmp(&a) }
            }
        }
    }

    /// go-cty's `rawNumberEqual`: same sign, both whole and equal, or the
    /// same `Text('f', -1)` (which depends on the precisions).
    pub fn cty_equal(&self, y: &Number) -> bool {
        if self.sign() != y.sign() {
            return false;
        }
        let (a, aa) = self.trunc();
        let (b, ba) = y.trunc();
        if aa != ba {
            return false;
        }
        if aa == Ordering::Equal {
            return a == b;
        }
        self.text('f', -1) == y.text('f', -1)
    }

    /// Go's `Float.Text(fmt, prec)` for `e E f g G`; `prec < 0` is the
    /// shortest form that reads back as the same value at this precision.
    pub fn text(&self, fmt: char, prec: i64) -> String {
        let mut buf = String::new();
        if self.neg {
            buf.push('-');
        }
        let mut d = Decimal::new(&self.mant, self.exp);
        let mut prec = prec;
        let shortest = prec < 0;
        if shortest {
            self.round_shortest(&mut d);
            prec = match fmt {
                'e' | 'E' => d.mant.len() as i64 - 1,
                'f' => (d.mant.len() as i64 - d.exp).max(0),
                _ => d.mant.len() as i64,
            };
        } else {
            match fmt {
                'e' | 'E' => d.round(1 + prec),
                'f' => d.round(d.exp + prec),
                _ => {
                    if prec == 0 {
                        prec = 1;
                    }
                    d.round(prec);
                }
            }
        }
        match fmt {
            'e' | 'E' => fmt_e(&mut buf, fmt, prec, &d),
            'f' => fmt_f(&mut buf, prec, &d),
            _ => {
                let mut eprec = prec;
                if eprec > d.mant.len() as i64 && d.mant.len() as i64 >= d.exp {
                    eprec = d.mant.len() as i64;
                }
                if shortest {
                    eprec = 6;
                }
                let exp = d.exp - 1;
                let e = if fmt == 'G' { 'E' } else { 'e' };
                if exp < -4 || exp >= eprec {
                    if prec > d.mant.len() as i64 {
                        prec = d.mant.len() as i64;
                    }
                    fmt_e(&mut buf, e, prec - 1, &d);
                } else {
                    if prec > d.exp {
                        prec = d.mant.len() as i64;
                    }
                    fmt_f(&mut buf, (prec - d.exp).max(0), &d);
                }
            }
        }
        buf
    }

    /// Go's `roundShortest`.
    fn round_shortest(&self, d: &mut Decimal) {
        if d.mant.is_empty() {
            return;
        }
        let bits = self.mant.bits() as i64;
        let s = i64::from(self.prec) + 1 - bits;
        let (mant, exp) = if s >= 0 {
            (&self.mant << (s as u64), self.exp - s)
        } else {
            (&self.mant >> ((-s) as u64), self.exp - s)
        };
        let lower = Decimal::new(&(&mant - 1u32), exp);
        let upper = Decimal::new(&(&mant + 1u32), exp);
        let inclusive = !mant.bit(1);
        for i in 0..d.mant.len() {
            let m = d.mant[i];
            let l = lower.at(i as i64);
            let u = upper.at(i as i64);
            let okdown = l != m || inclusive && i + 1 == lower.mant.len();
            let okup = m != u && (inclusive || m + 1 < u || i + 1 < upper.mant.len());
            if okdown && okup {
                d.round(i as i64 + 1);
                return;
            } else if okdown {
                d.round_down(i as i64 + 1);
                return;
            } else if okup {
                d.round_up(i as i64 + 1);
                return;
            }
        }
    }

    /// The text Terraform gives a number converted to a string
    /// (interpolation, `tostring`, `jsonencode`): `Text('f', -1)`.
    pub fn to_text(&self) -> String {
        self.text('f', -1)
    }

    /// `fmt.Sprintf("%<flags><width>.<prec><verb>", x)` for a `*big.Float`
    /// (go-cty's `format` with `e E f F g G`): Go's `Float.Format`.
    pub fn go_format(
        &self,
        verb: char,
        flags: &Flags,
        width: Option<usize>,
        prec: Option<usize>,
    ) -> String {
        let (fmt, p) = match verb {
            'F' => ('f', prec.map_or(6, |p| p as i64)),
            'g' | 'G' => (verb, prec.map_or(-1, |p| p as i64)),
            _ => (verb, prec.map_or(6, |p| p as i64)),
        };
        let buf = self.text(fmt, p);
        let (sign, body) = match buf.strip_prefix('-') {
            Some(b) => ("-", b),
            None if flags.plus => ("+", buf.as_str()),
            None if flags.space => (" ", buf.as_str()),
            None => ("", buf.as_str()),
        };
        pad_number(sign, "", body, flags, width, false)
    }
}

/// Flags of a Go format verb.
#[derive(Debug, Default, Clone, Copy)]
pub struct Flags {
    pub minus: bool,
    pub plus: bool,
    pub space: bool,
    pub zero: bool,
    pub sharp: bool,
}

/// `[pad][sign][prefix][zeros][digits][pad]` as Go's Float/Int Format do.
fn pad_number(
    sign: &str,
    prefix: &str,
    digits: &str,
    flags: &Flags,
    width: Option<usize>,
    has_prec: bool,
) -> String {
    let len = sign.len() + prefix.len() + digits.len();
    let pad = width.map_or(0, |w| w.saturating_sub(len));
    if flags.minus {
        format!("{sign}{prefix}{digits}{}", " ".repeat(pad))
    } else if flags.zero && !has_prec {
        format!("{sign}{prefix}{}{digits}", "0".repeat(pad))
    } else {
        format!("{}{sign}{prefix}{digits}", " ".repeat(pad))
    }
}

/// `fmt.Sprintf` of a `*big.Int` for `d b o x X` (Go's `Int.Format`):
/// `#` adds `0b`, `0`, `0x`, `0X`; a precision is a minimum digit count.
pub fn go_format_int(
    i: &BigInt,
    verb: char,
    flags: &Flags,
    width: Option<usize>,
    prec: Option<usize>,
) -> String {
    let radix = match verb {
        'b' => 2,
        'o' => 8,
        'x' | 'X' => 16,
        _ => 10,
    };
    let sign = if i.sign() == Sign::Minus {
        "-"
    } else if flags.plus {
        "+"
    } else if flags.space {
        " "
    } else {
        ""
    };
    let prefix = match (flags.sharp, verb) {
        (true, 'b') => "0b",
        (true, 'o') => "0",
        (true, 'x') => "0x",
        (true, 'X') => "0X",
        _ => "",
    };
    let mut digits = i.magnitude().to_str_radix(radix);
    if verb == 'X' {
        digits = digits.to_uppercase();
    }
    let mut zeros = 0;
    if let Some(p) = prec {
        if digits.len() < p {
            zeros = p - digits.len();
        } else if digits == "0" && p == 0 {
            return String::new();
        }
    }
    let digits = format!("{}{digits}", "0".repeat(zeros));
    pad_number(sign, prefix, &digits, flags, width, prec.is_some())
}

/// Go's `pow5` at precision `prec`: exact up to 5^27, then by squaring
/// with each step rounded (z at `prec`, the squares at `prec + 64`).
fn go_pow5(n: u64, prec: u32) -> Number {
    const M: u64 = 27;
    if n <= M {
        return round(false, pow5(n), 0, prec);
    }
    let mut z = round(false, pow5(M), 0, prec);
    let mut n = n - M;
    let mut f = round(false, BigUint::from(5u32), 0, prec + 64);
    while n > 0 {
        if n & 1 != 0 {
            let p = z.mul_exact(&f);
            z = round(false, p.mant, p.exp, prec);
        }
        let p = f.mul_exact(&f);
        f = round(false, p.mant, p.exp, prec + 64);
        n >>= 1;
    }
    z
}

/// Go's `Quo` at `prec`: correctly rounded (y not zero).
fn quo(x: &Number, y: &Number, prec: u32) -> Number {
    let neg = x.neg != y.neg;
    if x.mant.is_zero() {
        return Number::zero(neg, prec);
    }
    let xb = x.mant.bits() as i64;
    let yb = y.mant.bits() as i64;
    let s = (i64::from(prec) + 2 + yb - xb).max(0) + 1;
    let num = &x.mant << (s as u64);
    let q = &num / &y.mant;
    let sticky = !(&num % &y.mant).is_zero();
    let mut m = q << 1u32;
    if sticky {
        m += 1u32;
    }
    round(neg, m, x.exp - y.exp - s - 1, prec)
}

fn fmt_e(buf: &mut String, fmt: char, prec: i64, d: &Decimal) {
    buf.push(d.mant.first().map_or('0', |&c| c as char));
    if prec > 0 {
        buf.push('.');
        let mut i = 1usize;
        let m = d.mant.len().min(prec as usize + 1);
        if i < m {
            buf.push_str(std::str::from_utf8(&d.mant[i..m]).unwrap_or(""));
            i = m;
        }
        while (i as i64) <= prec {
            buf.push('0');
            i += 1;
        }
    }
    buf.push(fmt);
    let exp = if d.mant.is_empty() { 0 } else { d.exp - 1 };
    buf.push(if exp < 0 { '-' } else { '+' });
    let exp = exp.abs();
    if exp < 10 {
        buf.push('0');
    }
    buf.push_str(&exp.to_string());
}

fn fmt_f(buf: &mut String, prec: i64, d: &Decimal) {
    if d.exp > 0 {
        let m = d.mant.len().min(d.exp as usize);
        buf.push_str(std::str::from_utf8(&d.mant[..m]).unwrap_or(""));
        for _ in m as i64..d.exp {
            buf.push('0');
        }
    } else {
        buf.push('0');
    }
    if prec > 0 {
        buf.push('.');
        for i in 0..prec {
            buf.push(d.at(d.exp + i) as char);
        }
    }
}

/// Go's `math.Pow` (go-cty's `pow` goes through float64): whole exponents
/// by repeated squaring on `Frexp` parts as Go does, so results match
/// Go's digit for digit; a fractional part uses `exp(yf * ln(x))`.
pub fn go_pow(x: f64, y: f64) -> f64 {
    if y == 0.0 || x == 1.0 {
        return 1.0;
    }
    if y == 1.0 {
        return x;
    }
    if x.is_nan() || y.is_nan() {
        return f64::NAN;
    }
    let is_odd_int = |v: f64| v.fract() == 0.0 && (v.trunc() as i64) & 1 == 1;
    if x == 0.0 {
        if y < 0.0 {
            return if is_odd_int(y) {
                f64::INFINITY.copysign(x)
            } else {
                f64::INFINITY
            };
        }
        return if is_odd_int(y) { x } else { 0.0 };
    }
    if y.is_infinite() {
        return if x == -1.0 {
            1.0
        } else if (x.abs() < 1.0) == (y > 0.0) {
            0.0
        } else {
            f64::INFINITY
        };
    }
    if x.is_infinite() {
        if x < 0.0 {
            return go_pow(1.0 / x, -y);
        }
        return if y < 0.0 { 0.0 } else { f64::INFINITY };
    }
    if y == 0.5 {
        return x.sqrt();
    }
    if y == -0.5 {
        return 1.0 / x.sqrt();
    }
    let ya = y.abs();
    let (mut yi, mut yf) = (ya.trunc(), ya.fract());
    if yf != 0.0 && x < 0.0 {
        return f64::NAN;
    }
    if yi >= 9.223_372_036_854_776e18 {
        return if x == -1.0 {
            1.0
        } else if (x.abs() < 1.0) == (y > 0.0) {
            0.0
        } else {
            f64::INFINITY
        };
    }
    let mut a1 = 1.0f64;
    let mut ae: i64 = 0;
    if yf != 0.0 {
        if yf > 0.5 {
            yf -= 1.0;
            yi += 1.0;
        }
        a1 = go_exp(yf * go_log(x));
    }
    let (mut x1, mut xe) = frexp(x);
    let mut i = yi as i64;
    while i != 0 {
        if !(-(1 << 12)..=(1 << 12)).contains(&xe) {
            ae += xe;
            break;
        }
        if i & 1 == 1 {
            a1 *= x1;
            ae += xe;
        }
        x1 *= x1;
        xe <<= 1;
        if x1 < 0.5 {
            x1 += x1;
            xe -= 1;
        }
        i >>= 1;
    }
    if y < 0.0 {
        a1 = 1.0 / a1;
        ae = -ae;
    }
    ldexp(a1, ae)
}

/// Go's `math.Log` (go-cty's `log` divides two of them): the FreeBSD
/// algorithm of Go's log.go, which Go's amd64 assembly computes in the
/// same order, so results match Terraform's to the last bit.
// The constants are Go's, digit for digit.
#[allow(clippy::excessive_precision)]
pub fn go_log(x: f64) -> f64 {
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const L1: f64 = 6.666_666_666_666_735e-1;
    const L2: f64 = 3.999_999_999_940_942e-1;
    const L3: f64 = 2.857_142_874_366_239e-1;
    const L4: f64 = 2.222_219_843_214_978_4e-1;
    const L5: f64 = 1.818_357_216_161_805e-1;
    const L6: f64 = 1.531_383_769_920_937_3e-1;
    const L7: f64 = 1.479_819_860_511_658_6e-1;
    if x.is_nan() || x == f64::INFINITY {
        return x;
    }
    if x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    let (mut f1, mut ki) = frexp(x);
    if f1 < std::f64::consts::SQRT_2 / 2.0 {
        f1 *= 2.0;
        ki -= 1;
    }
    let f = f1 - 1.0;
    let k = ki as f64;
    let s = f / (2.0 + f);
    let s2 = s * s;
    let s4 = s2 * s2;
    let t1 = s2 * (L1 + s4 * (L3 + s4 * (L5 + s4 * L7)));
    let t2 = s4 * (L2 + s4 * (L4 + s4 * L6));
    let r = t1 + t2;
    let hfsq = 0.5 * f * f;
    k * LN2_HI - ((hfsq - (s * (hfsq + r) + k * LN2_LO)) - f)
}

/// Go's `math.Exp` as its amd64 assembly computes it (Shibata's method,
/// fused multiply-adds where the processor has them, as Go chooses at run
/// time), for the fractional part of `pow`.
#[allow(clippy::excessive_precision)]
pub fn go_exp(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const LN2U: f64 = 0.693_147_180_559_662_956_511_601_805_686_950_683_593_75;
    const LN2L: f64 = 0.282_352_905_630_315_771_225_884_481_750_134_360_255_254_120_68e-12;
    const C: [f64; 7] = [
        2.480_158_730_158_730_158_7e-5,
        1.984_126_984_126_984_127e-4,
        1.388_888_888_888_888_888_9e-3,
        8.333_333_333_333_333_333_3e-3,
        4.166_666_666_666_666_666_7e-2,
        1.666_666_666_666_666_666_7e-1,
        0.5,
    ];
    if x.is_nan() || x == f64::INFINITY {
        return x;
    }
    if x == f64::NEG_INFINITY {
        return 0.0;
    }
    if x > 7.097_827_128_933_84e2 {
        return f64::INFINITY;
    }
    // CVTSD2SL: round to nearest even; out of range is i32::MIN.
    let t = (x * LOG2E).round_ties_even();
    let e: i32 = if (-2_147_483_648.0..2_147_483_648.0).contains(&t) {
        t as i32
    } else {
        i32::MIN
    };
    let k = f64::from(e);
    let mut x0;
    if fma() {
        x0 = (-k).mul_add(LN2U, x);
        x0 = (-k).mul_add(LN2L, x0);
        x0 *= 0.0625;
        let mut x1 = C[0];
        for c in &C[1..] {
            x1 = x1.mul_add(x0, *c);
        }
        x1 = x1.mul_add(x0, 1.0);
        x0 *= x1;
        for _ in 0..3 {
            let x1 = x0 + 2.0;
            x0 *= x1;
        }
        let x1 = x0 + 2.0;
        x0 = x0.mul_add(x1, 1.0);
    } else {
        x0 = x - k * LN2U;
        x0 -= k * LN2L;
        x0 *= 0.0625;
        let mut x1 = C[0];
        for c in &C[1..] {
            x1 = x1 * x0 + *c;
        }
        x1 = x1 * x0 + 1.0;
        x0 *= x1;
        for _ in 0..4 {
            let x1 = x0 + 2.0;
            x0 *= x1;
        }
        x0 += 1.0;
    }
    let mut bx = i64::from(e) + 0x3ff;
    if bx <= 0 {
        if bx < -52 {
            return 0.0;
        }
        bx += 0x3fe;
        x0 *= f64::from_bits((bx as u64) << 52);
        bx = 1;
    } else if bx >= 0x7ff {
        return f64::INFINITY;
    }
    x0 * f64::from_bits((bx as u64) << 52)
}

/// Whether Go's amd64 `Exp` would take its FMA path here.
fn fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

/// Go's `Frexp`: `f = frac * 2^exp`, `frac` in [0.5, 1).
fn frexp(f: f64) -> (f64, i64) {
    if f == 0.0 || !f.is_finite() {
        return (f, 0);
    }
    let (f, mut exp) = if f.abs() < f64::MIN_POSITIVE {
        (f * (1u64 << 52) as f64, -52i64)
    } else {
        (f, 0)
    };
    let bits = f.to_bits();
    exp += ((bits >> 52) & 0x7ff) as i64 - 1022;
    let bits = (bits & !(0x7ff << 52)) | (1022 << 52);
    (f64::from_bits(bits), exp)
}

/// `frac * 2^exp` (Go's `Ldexp`), overflowing to an infinity.
fn ldexp(frac: f64, exp: i64) -> f64 {
    // 2^e exactly, for e in -1022..=1023.
    let two = |e: i64| f64::from_bits(((e + 1023) as u64) << 52);
    let mut r = frac;
    let mut e = exp.clamp(-2200, 2200);
    while e > 1023 {
        r *= two(1023);
        e -= 1023;
    }
    while e < -1022 {
        r *= two(-1022);
        e += 1022;
    }
    r * two(e)
}

impl PartialEq for Number {
    /// go-cty's equality (see [`Number::cty_equal`]).
    fn eq(&self, other: &Number) -> bool {
        self.cty_equal(other)
    }
}

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl From<i64> for Number {
    fn from(i: i64) -> Number {
        Number::from_i64(i)
    }
}

impl From<usize> for Number {
    fn from(i: usize) -> Number {
        Number::from_i64(i64::try_from(i).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Number {
        Number::parse(s).unwrap().unwrap()
    }

    #[test]
    fn terraform_texts() {
        // Expected strings from hcl v2.23.0 + go-cty v1.16.2 (see
        // testdata/conformance/port/oracle).
        assert_eq!(n("0.1").add(&n("0.2")).unwrap().to_text(), "0.3");
        assert_eq!(
            n("1").div(&n("3")).unwrap().to_text(),
            format!("0.{}5", "3".repeat(154))
        );
        assert_eq!(
            n("2").div(&n("3")).unwrap().mul(&n("3")).unwrap().to_text(),
            "2"
        );
        assert_eq!(
            Number::from_f64(2f64.sqrt()).unwrap().to_text(),
            "1.4142135623730951"
        );
        assert_eq!(n("1e400").to_text(), format!("1{}", "0".repeat(400)));
        assert_eq!(n("0").neg().to_text(), "-0");
        let third = n("1").div(&n("3")).unwrap();
        assert_eq!(third.text('e', 6), "3.333333e-01");
        assert_eq!(third.text('f', 6), "0.333333");
    }
}
