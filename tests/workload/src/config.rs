//! The workload's configuration: read from `baton.*` bootargs, written back for the next image.
//!
//! Owns the `baton.*` keys (seed, chain length, generation counter, running totals, damage
//! injection) and the rewrite of the command line that carries them across a handover, so
//! the counters survive even when the next image has to boot cold. Knows nothing of memory.

use super::alloc::format;
use super::alloc::string::{String, ToString};
use super::alloc::vec::Vec;
use board::cmdline::{self, Arg, Cmdline, Escaped, ValueError};
use core::fmt;

use super::bulk::{self, Shape, Spec};
use super::damage::DamageKind;
use super::report::{Check, Failure};

/// `baton.seed=`: the chain's seed (decimal or `0x` hex).
pub const KEY_SEED: &str = "baton.seed=";
/// `baton.generations=`: how many generations the chain runs (default 1).
pub const KEY_GENERATIONS: &str = "baton.generations=";
/// `baton.gen=`: this generation's number (written by the previous image; default 0).
pub const KEY_GEN: &str = "baton.gen=";
/// `baton.cold=`: cold generations before this one (generation 0 counts as cold).
pub const KEY_COLD: &str = "baton.cold=";
/// `baton.vbytes=`: bytes verified by the generations before this one.
pub const KEY_VBYTES: &str = "baton.vbytes=";
/// `baton.leaked=`: pages leaked by the generations before this one.
pub const KEY_LEAKED: &str = "baton.leaked=";
/// `baton.damage=`: test only, damage the outgoing handover data (see [`DamageKind`]).
pub const KEY_DAMAGE: &str = "baton.damage=";
/// `baton.damage-every=K`: damage the handover out of generations K-1, 2K-1, ...
/// (default: only the handover out of generation 0).
pub const KEY_DAMAGE_EVERY: &str = "baton.damage-every=";

/// Keys the outgoing image rewrites; every other word of the command line is kept.
const CARRIED: [&str; 4] = [KEY_GEN, KEY_COLD, KEY_VBYTES, KEY_LEAKED];

/// Seed used when `baton.seed=` is absent ("baton" in ASCII).
pub const DEFAULT_SEED: u64 = 0x0062_6174_6f6e;

/// A `baton.*` value that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A number is malformed or out of range.
    BadNumber { key: &'static str, value: String },
    /// `baton.damage=` names no known kind.
    UnknownDamage { value: String },
    /// `baton.preserve=` is not a size, or `baton.shape=` names no known shape.
    BadBulk { key: &'static str, value: String },
    /// `baton.generations=0`, `baton.damage-every=0`, or `baton.gen` not below `generations`.
    OutOfRange { key: &'static str, value: u64 },
    /// A size above `board::cmdline::MAX_SIZE` (it would wrap when rounded).
    SizeOverflow { key: &'static str, value: String },
    /// `baton.preserve=` asks for more than the RAM the image can use.
    PreserveExceedsRam { asked: u64, usable: u64 },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::BadNumber { key, value } => {
                write!(f, "bootarg {key}{value} is not a number")
            }
            ConfigError::UnknownDamage { value } => write!(
                f,
                "bootarg {KEY_DAMAGE}{value}: kinds are leaf-bitflip, wild-pointer, bad-order, \
                 bad-type, truncate-fdt, scratch-overlap"
            ),
            ConfigError::OutOfRange { key, value } => {
                write!(f, "bootarg {key}{value} is out of range")
            }
            ConfigError::SizeOverflow { key, value } => write!(
                f,
                "bootarg {key}{value}: the size overflows (sizes stop at 4 PiB)"
            ),
            ConfigError::PreserveExceedsRam { asked, usable } => write!(
                f,
                "bootarg {}{} MiB: more than the {} MiB of RAM this image can use",
                bulk::KEY_PRESERVE,
                asked >> 20,
                usable >> 20
            ),
            ConfigError::BadBulk { key, value } => write!(
                f,
                "bootarg {key}{value}: sizes are like 64M or 1G, shapes scatter, dense, mixed"
            ),
        }
    }
}

impl ConfigError {
    /// The `FAIL` line for a command line the workload cannot run with (generation 0: the
    /// counter itself may be what failed to parse).
    pub fn to_failure(&self) -> Failure {
        Failure {
            generation: 0,
            check: Check::Config,
            detail: self.to_string(),
        }
    }
}

/// The workload's view of one boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Chain seed.
    pub seed: u64,
    /// Generations in the chain (`>= 1`).
    pub generations: u32,
    /// This generation's number (`< generations`).
    pub generation: u32,
    /// Cold generations before this one.
    pub cold_before: u32,
    /// Bytes verified before this generation.
    pub verified_before: u64,
    /// Pages leaked before this generation.
    pub leaked_before: u64,
    /// Damage to inject into outgoing handovers, if any.
    pub damage: Option<DamageKind>,
    /// Damage period (see [`KEY_DAMAGE_EVERY`]); `None` = only generation 0's handover.
    pub damage_every: Option<u32>,
    /// Largest buddy order of this image (`mm::MAX_ORDER` of the build).
    pub max_order: u32,
    /// The scaled preserved set, if `baton.preserve=` asks for one.
    pub bulk: Option<Spec>,
}

/// The value of `arg` for the workload's key `key` (with its `=`): a refused value is the
/// variant `bad` makes of it, named by key and value.
fn arg<T: Copy>(
    arg: &Arg<'_, T>,
    bad: impl FnOnce(String) -> ConfigError,
) -> Result<Option<T>, ConfigError> {
    arg.get().map_err(|e| bad(Escaped(e.value).to_string()))
}

fn number(a: &Arg<'_, u64>, key: &'static str, default: u64) -> Result<u64, ConfigError> {
    Ok(arg(a, |value| ConfigError::BadNumber { key, value })?.unwrap_or(default))
}

fn number32(a: &Arg<'_, u64>, key: &'static str, default: u32) -> Result<u32, ConfigError> {
    let v = number(a, key, u64::from(default))?;
    u32::try_from(v).map_err(|_| ConfigError::OutOfRange { key, value: v })
}

fn bulk_spec(c: &Cmdline<'_>) -> Result<Option<Spec>, ConfigError> {
    let bad = |key| move |value| ConfigError::BadBulk { key, value };
    let shape = match arg(&c.shape, bad(bulk::KEY_SHAPE))? {
        None => Shape::Dense,
        Some(v) => Shape::from_name(v).ok_or_else(|| bad(bulk::KEY_SHAPE)(String::from(v)))?,
    };
    if let Arg::Bad(e) = c.preserve {
        if e.why == ValueError::Overflow {
            return Err(ConfigError::SizeOverflow {
                key: bulk::KEY_PRESERVE,
                value: Escaped(e.value).to_string(),
            });
        }
    }
    match arg(&c.preserve, bad(bulk::KEY_PRESERVE))? {
        None | Some(0) => Ok(None),
        // At most board::cmdline::MAX_SIZE: rounding up to a page cannot wrap.
        Some(bytes) => Ok(Some(Spec {
            bytes: bytes.next_multiple_of(mm::PAGE_SIZE),
            shape,
        })),
    }
}

impl Config {
    /// Reads the `baton.*` keys of a raw command line (parsed by `board::cmdline`, the one
    /// parser) for an image whose buddy allocator stops at `max_order`.
    pub fn from_bootargs(bootargs: impl AsRef<[u8]>, max_order: u32) -> Result<Self, ConfigError> {
        Self::from_cmdline(&cmdline::parse(bootargs.as_ref()), max_order)
    }

    /// Takes the `baton.*` values of a parsed command line for an image whose buddy
    /// allocator stops at `max_order`.
    pub fn from_cmdline(c: &Cmdline<'_>, max_order: u32) -> Result<Self, ConfigError> {
        let generations = number32(&c.generations, KEY_GENERATIONS, 1)?;
        if generations == 0 {
            return Err(ConfigError::OutOfRange {
                key: KEY_GENERATIONS,
                value: 0,
            });
        }
        let generation = number32(&c.gen, KEY_GEN, 0)?;
        if generation >= generations {
            return Err(ConfigError::OutOfRange {
                key: KEY_GEN,
                value: u64::from(generation),
            });
        }
        let unknown = |value| ConfigError::UnknownDamage { value };
        let damage = match arg(&c.damage, unknown)? {
            None => None,
            Some(v) => Some(DamageKind::from_name(v).ok_or_else(|| unknown(String::from(v)))?),
        };
        let damage_every = match c.damage_every.is_present() {
            false => None,
            true => match number32(&c.damage_every, KEY_DAMAGE_EVERY, 0)? {
                0 => {
                    return Err(ConfigError::OutOfRange {
                        key: KEY_DAMAGE_EVERY,
                        value: 0,
                    })
                }
                k => Some(k),
            },
        };
        Ok(Config {
            seed: number(&c.seed, KEY_SEED, DEFAULT_SEED)?,
            generations,
            generation,
            cold_before: number32(&c.cold, KEY_COLD, 0)?,
            verified_before: number(&c.vbytes, KEY_VBYTES, 0)?,
            leaked_before: number(&c.leaked, KEY_LEAKED, 0)?,
            damage,
            damage_every,
            max_order,
            bulk: bulk_spec(c)?,
        })
    }

    /// Refuses, before any allocation, a scaled set larger than the RAM the image can use
    /// (`usable`: free bytes once the image is up, less what the chain keeps for itself).
    pub fn check_ram(&self, usable: u64) -> Result<(), ConfigError> {
        match self.bulk {
            Some(s) if s.bytes > usable => Err(ConfigError::PreserveExceedsRam {
                asked: s.bytes,
                usable,
            }),
            _ => Ok(()),
        }
    }

    /// True if this generation is the chain's last: print `SOAK` and exit instead of handing over.
    pub fn is_last(&self) -> bool {
        self.generation + 1 >= self.generations
    }

    /// The damage to inject into this generation's outgoing handover, if any.
    pub fn damage_now(&self) -> Option<DamageKind> {
        let kind = self.damage?;
        let hit = match self.damage_every {
            None => self.generation == 0,
            Some(k) => (self.generation + 1).is_multiple_of(k),
        };
        hit.then_some(kind)
    }
}

/// The running totals the next generation starts from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Carried {
    /// The next generation's number.
    pub generation: u32,
    /// Cold generations up to and including this one.
    pub cold: u32,
    /// Bytes verified up to and including this generation.
    pub verified_bytes: u64,
    /// Pages leaked up to and including this generation.
    pub leaked: u64,
}

/// The command line for the next image: `incoming` without its carried `baton.*` words,
/// followed by the new values. Every other word is kept in order, whatever its bytes.
pub fn next_bootargs(incoming: &[u8], c: &Carried) -> Vec<u8> {
    let mut out = Vec::with_capacity(incoming.len() + 64);
    for w in cmdline::words(incoming) {
        if !CARRIED.iter().any(|k| w.starts_with(k.as_bytes())) {
            out.extend_from_slice(w);
            out.push(b' ');
        }
    }
    let tail = format!(
        "{KEY_GEN}{} {KEY_COLD}{} {KEY_VBYTES}{} {KEY_LEAKED}{}",
        c.generation, c.cold, c.verified_bytes, c.leaked
    );
    out.extend_from_slice(tail.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_nothing_is_given() {
        let c = Config::from_bootargs("console=ttyAMA0", 10).unwrap();
        assert_eq!(
            c,
            Config {
                seed: DEFAULT_SEED,
                generations: 1,
                generation: 0,
                cold_before: 0,
                verified_before: 0,
                leaked_before: 0,
                damage: None,
                damage_every: None,
                max_order: 10,
                bulk: None,
            }
        );
        assert!(c.is_last());
    }

    #[test]
    fn every_key_is_read_and_carried_keys_round_trip() {
        let args = "baton.seed=0x2a baton.generations=50 baton.gen=7 baton.cold=2 \
                    baton.vbytes=99 baton.leaked=0 baton.damage=bad-order baton.damage-every=4";
        let c = Config::from_bootargs(args, 8).unwrap();
        assert_eq!(
            (c.seed, c.generations, c.generation, c.cold_before),
            (42, 50, 7, 2)
        );
        assert_eq!(
            (c.verified_before, c.damage, c.damage_every),
            (99, Some(DamageKind::BadOrder), Some(4))
        );
        assert_eq!(c.damage_now(), Some(DamageKind::BadOrder)); // (7 + 1) % 4 == 0
        let next = next_bootargs(
            args.as_bytes(),
            &Carried {
                generation: 8,
                cold: 3,
                verified_bytes: 1234,
                leaked: 0,
            },
        );
        assert_eq!(
            String::from_utf8(next.clone()).unwrap(),
            "baton.seed=0x2a baton.generations=50 baton.damage=bad-order baton.damage-every=4 \
             baton.gen=8 baton.cold=3 baton.vbytes=1234 baton.leaked=0"
        );
        let c2 = Config::from_bootargs(&next, 8).unwrap();
        assert_eq!(
            (c2.generation, c2.cold_before, c2.verified_before),
            (8, 3, 1234)
        );
        assert_eq!(c2.damage_now(), None);
    }

    #[test]
    fn damage_without_period_hits_only_generation_0() {
        let c = Config::from_bootargs("baton.generations=5 baton.damage=wild-pointer", 10).unwrap();
        assert_eq!(c.damage_now(), Some(DamageKind::WildPointer));
        let c = Config::from_bootargs(
            "baton.generations=5 baton.gen=1 baton.damage=wild-pointer",
            10,
        )
        .unwrap();
        assert_eq!(c.damage_now(), None);
    }

    #[test]
    fn malformed_values_are_named() {
        assert_eq!(
            Config::from_bootargs("baton.seed=12z", 10),
            Err(ConfigError::BadNumber {
                key: KEY_SEED,
                value: String::from("12z")
            })
        );
        let bad = Config::from_bootargs("baton.seed=12z", 10).unwrap_err();
        assert_eq!(
            bad.to_failure().to_string(),
            "FAIL gen=0 check=config detail=bootarg baton.seed=12z is not a number"
        );
        assert_eq!(
            Config::from_bootargs("baton.damage=melt", 10),
            Err(ConfigError::UnknownDamage {
                value: String::from("melt")
            })
        );
        assert_eq!(
            Config::from_bootargs("baton.generations=3 baton.gen=3", 10),
            Err(ConfigError::OutOfRange {
                key: KEY_GEN,
                value: 3
            })
        );
        assert_eq!(
            Config::from_bootargs("baton.generations=0", 10),
            Err(ConfigError::OutOfRange {
                key: KEY_GENERATIONS,
                value: 0
            })
        );
        assert_eq!(
            Config::from_bootargs("baton.gen=4294967296", 10),
            Err(ConfigError::OutOfRange {
                key: KEY_GEN,
                value: 1 << 32
            })
        );
    }

    #[test]
    fn a_preserve_size_that_overflows_is_refused_by_name() {
        // Finding 4: baton.preserve=2^64-1 wrapped to 0 and the chain "preserved" nothing.
        assert_eq!(
            Config::from_bootargs(
                "baton.generations=2 baton.preserve=18446744073709551615",
                10
            ),
            Err(ConfigError::SizeOverflow {
                key: bulk::KEY_PRESERVE,
                value: String::from("18446744073709551615")
            })
        );
        // What already gave a clear error still does.
        assert!(matches!(
            Config::from_bootargs("baton.preserve=-1", 10),
            Err(ConfigError::BadBulk { .. })
        ));
        assert!(matches!(
            Config::from_bootargs("baton.shape=foo", 10),
            Err(ConfigError::BadBulk { .. })
        ));
    }

    #[test]
    fn a_preserved_set_larger_than_ram_is_refused_before_allocating() {
        // Finding 4: baton.preserve=999999G failed only after exhausting RAM.
        let c = Config::from_bootargs("baton.generations=2 baton.preserve=999999G", 10).unwrap();
        let usable = 900 << 20;
        assert_eq!(
            c.check_ram(usable),
            Err(ConfigError::PreserveExceedsRam {
                asked: 999_999 << 30,
                usable
            })
        );
        let fits = Config::from_bootargs("baton.preserve=64M", 10).unwrap();
        assert_eq!(fits.check_ram(usable), Ok(()));
    }

    #[test]
    fn non_utf8_words_are_carried_to_the_next_image() {
        let next = next_bootargs(
            b"baton.generations=2 \xff baton.gen=0",
            &Carried {
                generation: 1,
                cold: 1,
                verified_bytes: 0,
                leaked: 0,
            },
        );
        assert_eq!(
            next,
            b"baton.generations=2 \xff baton.gen=1 baton.cold=1 baton.vbytes=0 baton.leaked=0"
        );
        assert_eq!(
            Config::from_bootargs(&next, 10).map(|c| c.generation),
            Ok(1)
        );
    }
}
