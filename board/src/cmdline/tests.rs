//! Tests of the one command line parser, and its fuzz target.

use super::*;

#[test]
fn loglevel_accepts_names_and_linux_numbers() {
    assert_eq!(parse(b"loglevel=debug").log_level(), LevelFilter::Debug);
    assert_eq!(
        parse(b"console=ttyAMA0 loglevel=4 quiet").log_level(),
        LevelFilter::Warn
    );
    assert_eq!(parse(b"loglevel=8").log_level(), LevelFilter::Trace);
    assert_eq!(parse(b"loglevel=bogus").log_level(), LevelFilter::Info);
    assert_eq!(parse(b"").log_level(), LevelFilter::Info);
}

#[test]
fn test_actions_are_recognised_and_unknown_ones_named() {
    assert_eq!(
        parse(b"baton.test=fault").test.ok(),
        Some(TestAction::Fault)
    );
    assert_eq!(
        parse(b"baton.test=stack-overflow").test.ok(),
        Some(TestAction::StackOverflow)
    );
    assert_eq!(
        parse(b"baton.test=nothing").test,
        Arg::Bad(ArgError {
            key: KEY_TEST,
            value: b"nothing",
            why: ValueError::UnknownName
        })
    );
}

#[test]
fn the_last_occurrence_wins_for_every_key() {
    // Finding 5: kho_scratch= took its first occurrence, baton.* the last.
    let c = parse(b"kho_scratch=64M baton.seed=1 kho_scratch=128M baton.seed=0x2a loglevel=debug loglevel=warn");
    assert_eq!(c.kho_scratch, Arg::Set(128 << 20));
    assert_eq!(c.seed, Arg::Set(42));
    assert_eq!(c.log_level(), LevelFilter::Warn);
    // A bad last value is what counts; a good last value replaces an earlier bad one.
    assert!(matches!(parse(b"baton.gen=1 baton.gen=x").gen, Arg::Bad(_)));
    assert_eq!(parse(b"baton.gen=x baton.gen=1").gen, Arg::Set(1));
}

#[test]
fn a_non_utf8_value_is_refused_for_its_own_key_only() {
    // Finding 2: one \xff byte used to refuse the whole device tree.
    let c = parse(b"baton.generations=2 \xff baton.shape=d\xffnse baton.seed=7");
    assert_eq!(c.generations, Arg::Set(2));
    assert_eq!(c.seed, Arg::Set(7));
    assert_eq!(
        c.shape,
        Arg::Bad(ArgError {
            key: KEY_SHAPE,
            value: b"d\xffnse",
            why: ValueError::NotUtf8
        })
    );
    assert_eq!(c.errors().count(), 1);
    assert_eq!(
        c.errors().next().map(|e| std::format!("{e}")),
        Some("bootarg baton.shape=d\\xffnse refused: the value is not UTF-8".into())
    );
}

#[test]
fn sizes_that_overflow_are_refused_by_name() {
    // Finding 4: kho_scratch=2^64-1 wrapped to 0 when rounded up; baton.preserve too.
    assert_eq!(
        parse_size(b"18446744073709551615"),
        Err(ValueError::Overflow)
    );
    assert_eq!(
        parse_size(b"18446744073709551616"),
        Err(ValueError::Overflow)
    );
    assert_eq!(parse_size(b"17179869184G"), Err(ValueError::Overflow));
    assert_eq!(parse_size(b"4096T"), Ok(MAX_SIZE));
    assert_eq!(parse_size(b"4097T"), Err(ValueError::Overflow));
    let c = parse(b"kho_scratch=18446744073709551615 baton.preserve=18446744073709551615");
    assert_eq!(
        c.kho_scratch,
        Arg::Bad(ArgError {
            key: KEY_KHO_SCRATCH,
            value: b"18446744073709551615",
            why: ValueError::Overflow
        })
    );
    assert!(matches!(
        c.preserve,
        Arg::Bad(ArgError {
            key: KEY_PRESERVE,
            why: ValueError::Overflow,
            ..
        })
    ));
    // Below MAX_SIZE every value rounds up to 2 MiB without wrapping.
    assert!(MAX_SIZE.checked_next_multiple_of(2 << 20).is_some());
}

#[test]
fn sizes_and_numbers_parse_once() {
    assert_eq!(parse_size(b"64M"), Ok(64 << 20));
    assert_eq!(parse_size(b"1g"), Ok(1 << 30));
    assert_eq!(parse_size(b"123"), Ok(123));
    assert_eq!(parse_size(b"0"), Ok(0));
    assert_eq!(parse_size(b"x"), Err(ValueError::NotANumber));
    assert_eq!(parse_size(b"-1"), Err(ValueError::NotANumber));
    assert_eq!(parse_size(b"M"), Err(ValueError::NotANumber));
    assert_eq!(parse_size(b""), Err(ValueError::Empty));
    assert_eq!(parse_number(b"0x2A"), Ok(42));
    assert_eq!(parse_number(b"18446744073709551615"), Ok(u64::MAX));
    assert_eq!(
        parse_number(b"18446744073709551616"),
        Err(ValueError::Overflow)
    );
    assert_eq!(parse_number(b"0x"), Err(ValueError::NotANumber));
    assert_eq!(
        parse(b"kho_scratch=0").kho_scratch.get().map_err(|e| e.why),
        Err(ValueError::Zero)
    );
}

#[test]
fn the_keys_another_engineer_needs_are_typed() {
    assert_eq!(parse(b"").handover_format(), HandoverFormat::Auto);
    assert_eq!(
        parse(b"baton.handover-format=linux").handover_format(),
        HandoverFormat::Linux
    );
    assert_eq!(
        parse(b"baton.handover-format=baton").handover_format(),
        HandoverFormat::Baton
    );
    assert!(matches!(
        parse(b"baton.handover-format=dos").handover_format,
        Arg::Bad(_)
    ));
    assert_eq!(parse(b"baton.kho-test=1M").kho_test, Arg::Set(1 << 20));
    assert_eq!(parse(b"").kho_test.get(), Ok(None));
}

#[test]
fn the_chain_is_requested_by_the_key_even_with_a_bad_value() {
    assert!(parse(b"baton.generations=3").chain_requested());
    assert!(parse(b"baton.generations=zz").chain_requested());
    assert!(!parse(b"baton.generationsX=3 baton.gen=1").chain_requested());
}

/// Fuzz target: the command line. Random and mutated command lines never panic (overflow
/// checks on), and every key's value is the one its last occurrence gives alone.
#[test]
fn fuzz_cmdline() {
    const SEEDS: [&[u8]; 4] = [
        b"baton.generations=20 baton.seed=1 loglevel=debug kho_scratch=64M",
        b"baton.preserve=1G baton.shape=mixed baton.gen=3 baton.cold=1 baton.vbytes=99",
        b"console=ttyAMA0 baton.damage=bad-order baton.damage-every=4 baton.test=panic",
        b"baton.handover-format=linux baton.kho-test=16M baton.leaked=0 quiet",
    ];
    baton_fuzz::run("cmdline", 20_000, |rng| {
        let mut line = SEEDS[rng.index(SEEDS.len())].to_vec();
        baton_fuzz::mutate(&mut line, rng, 8);
        let c = parse(&line);
        let _ = c.errors().count();
        // Last occurrence wins: re-parsing only the last word with the key gives the same.
        let last = words(&line)
            .filter(|w| w.starts_with(b"baton.seed="))
            .last();
        if let Some(w) = last {
            assert_eq!(parse(w).seed, c.seed);
        } else {
            assert_eq!(c.seed, Arg::Absent);
        }
        let _ = std::format!("{}", Escaped(&line));
        // A local, not the tail expression: the iterator borrows `line`.
        #[allow(clippy::let_and_return)]
        let clean = c.errors().next().is_none();
        clean
    });
}
