//! `chmod` modes: octal (`644`, `1777`) or symbolic as chmod(1) and
//! Hadoop write them (`u+x,go-w`, `a=r`, `+t`, `o-rwx`, `a+X`).
//!
//! Who is any of `u`, `g`, `o`, `a`; none means all (HDFS has no umask for
//! chmod). `X` is execute only for directories and for files someone can
//! already execute. `t` is the sticky bit; it changes only when named, for
//! all or others (`+t`, `o+t`, `a-t`), and `=` without it keeps it.

use anyhow::bail;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clause {
    /// The permission bits of who it is about (0o700, 0o070, 0o007, or ors).
    who: u32,
    /// Whether the sticky bit is in reach (all or others).
    sticky: bool,
    ops: Vec<(char, Perms)>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Perms {
    r: bool,
    w: bool,
    x: bool,
    big_x: bool,
    t: bool,
}

const STICKY: u32 = 0o1000;

impl Mode {
    pub fn parse(s: &str) -> anyhow::Result<Mode> {
        let bad = |why: String| -> anyhow::Result<Mode> {
            bail!("mode {s:?}: {why}; expected octal bits like 644 or 1777, or symbolic like u+x,go-w, a=r, +t")
        };
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
            return match u32::from_str_radix(s, 8) {
                Ok(m) if m <= 0o1777 && s.len() <= 4 => Ok(Mode::Octal(m)),
                _ => bad("not octal bits up to 1777".into()),
            };
        }
        let mut clauses = Vec::new();
        for part in s.split(',') {
            let mut chars = part.chars().peekable();
            let mut who = 0;
            let mut sticky = false;
            let mut named = false;
            while let Some(&c) = chars.peek() {
                let bits = match c {
                    'u' => 0o700,
                    'g' => 0o070,
                    'o' => 0o007,
                    'a' => 0o777,
                    _ => break,
                };
                named = true;
                who |= bits;
                sticky |= c == 'o' || c == 'a';
                chars.next();
            }
            if !named {
                who = 0o777;
                sticky = true;
            }
            let mut ops = Vec::new();
            while let Some(op) = chars.next() {
                if !matches!(op, '+' | '-' | '=') {
                    return bad(format!(
                        "`{op}' is not who (u, g, o, a) nor an operator (+, -, =)"
                    ));
                }
                let mut p = Perms::default();
                while let Some(&c) = chars.peek() {
                    match c {
                        'r' => p.r = true,
                        'w' => p.w = true,
                        'x' => p.x = true,
                        'X' => p.big_x = true,
                        't' => p.t = true,
                        '+' | '-' | '=' => break,
                        c => return bad(format!("`{c}' is not a permission (r, w, x, X, t)")),
                    }
                    chars.next();
                }
                ops.push((op, p));
            }
            if ops.is_empty() {
                return bad(format!("{part:?} has no operator (+, -, =)"));
            }
            clauses.push(Clause { who, sticky, ops });
        }
        Ok(Mode::Symbolic(clauses))
    }

    /// The new permission of an entry whose permission is `current`.
    pub fn apply(&self, current: u32, is_dir: bool) -> u32 {
        let clauses = match self {
            Mode::Octal(m) => return *m,
            Mode::Symbolic(c) => c,
        };
        let mut mode = current & 0o1777;
        for c in clauses {
            for (op, p) in &c.ops {
                let mut bits = 0;
                if p.r {
                    bits |= 0o444;
                }
                if p.w {
                    bits |= 0o222;
                }
                if p.x || (p.big_x && (is_dir || mode & 0o111 != 0)) {
                    bits |= 0o111;
                }
                bits &= c.who;
                let sticky = if p.t && c.sticky { STICKY } else { 0 };
                mode = match op {
                    '+' => mode | bits | sticky,
                    '-' => mode & !(bits | sticky),
                    _ => (mode & !c.who & !sticky) | bits | sticky,
                };
            }
        }
        mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str, cur: u32, dir: bool) -> u32 {
        Mode::parse(s).unwrap().apply(cur, dir)
    }

    #[test]
    fn octal_and_symbolic_modes() {
        assert_eq!(Mode::parse("644").unwrap(), Mode::Octal(0o644));
        assert_eq!(Mode::parse("1777").unwrap(), Mode::Octal(0o1777));
        assert_eq!(sym("u+x,go-w", 0o666, false), 0o744);
        assert_eq!(sym("a=r", 0o755, false), 0o444);
        assert_eq!(sym("+t", 0o777, true), 0o1777);
        assert_eq!(sym("o-rwx", 0o777, false), 0o770);
        assert_eq!(sym("a-t", 0o1777, true), 0o777);
        assert_eq!(sym("u-t", 0o1777, true), 0o1777);
        assert_eq!(sym("a=r", 0o1755, true), 0o1444);
        assert_eq!(sym("u+r-w", 0o200, false), 0o400);
        assert_eq!(sym("g=", 0o640, false), 0o600, "= with nothing clears");
    }

    #[test]
    fn big_x_is_for_directories_and_executables() {
        assert_eq!(sym("a+X", 0o644, true), 0o755);
        assert_eq!(sym("a+X", 0o644, false), 0o644);
        assert_eq!(sym("a+X", 0o744, false), 0o755);
    }

    #[test]
    fn bad_modes_are_refused() {
        for bad in ["q+z", "u+y", "u", "", "8", "17777", "u+x,", "+w,g", "g=u"] {
            assert!(Mode::parse(bad).is_err(), "{bad}");
        }
        let e = Mode::parse("u+y").unwrap_err().to_string();
        assert!(e.contains("`y' is not a permission"), "{e}");
    }
}
