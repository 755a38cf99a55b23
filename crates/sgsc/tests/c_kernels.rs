//! The generated C's arithmetic against the Rust integer path's, value by value: bit-packed
//! reads at every width from 1 to 16 (extremes and hand-picked codes), rounding shifts of both
//! signs at every shift, and saturation at the edges. Built with the host's `cc` (C99, every
//! warning an error, sanitizers on).

use sgsc_runtime::bits::BitWriter;
use sgsc_runtime::integer::arith::{round_shift, saturate};
use std::fmt::Write;

/// The `common` section of `kernels.c`, the part every model's C holds.
fn common_section() -> String {
    let kernels = include_str!("../src/codegen/kernels.c");
    let start = kernels.find("/* kernel: common */").unwrap();
    let end = kernels.find("/* kernel: convolve */").unwrap();
    kernels[start..end].to_string()
}

/// Builds and runs `main_body` after the common section; returns its output lines.
fn run(main_body: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        "#include <stdint.h>\n#include <stdio.h>\n#include <string.h>\ntypedef int16_t sgsc_weight;\n{}\nint main(void)\n{{\n{main_body}\n    return 0;\n}}\n",
        common_section()
    );
    std::fs::write(dir.path().join("check.c"), source).unwrap();
    let built = std::process::Command::new("cc")
        .current_dir(dir.path())
        .args([
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-Wno-unused-function",
            "-pedantic",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "check.c",
            "-o",
            "check",
        ])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let ran = std::process::Command::new(dir.path().join("check"))
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    String::from_utf8(ran.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bit_packed_reads_at_widths_1_to_16_give_the_written_codes() {
    // Per width: the extremes, 0, -1, 1 and a hand-picked middle code, packed back to back
    // across every width in turn (so codes straddle byte boundaries at every offset).
    let mut codes = Vec::new();
    for width in 1..=16u32 {
        let low = -(1i32 << (width - 1));
        let high = (1i32 << (width - 1)) - 1;
        for code in [low, high, 0, -1, 1.min(high), (high / 3).max(low / 5)] {
            codes.push((width, code));
        }
    }
    let mut writer = BitWriter::new();
    for &(width, code) in &codes {
        writer.push(code, width);
    }
    let mut bytes = writer.finish();
    bytes.extend([0, 0]);
    let mut body = format!(
        "    static const uint8_t bytes[{}] = {{{}}};\n    static const uint8_t widths[{}] = {{{}}};\n    sgsc_bits bits;\n    sgsc_weight value;\n    int i;\n    bits.bytes = bytes;\n    bits.position = 0;\n",
        bytes.len(),
        bytes.iter().map(u8::to_string).collect::<Vec<_>>().join(", "),
        codes.len(),
        codes.iter().map(|(w, _)| w.to_string()).collect::<Vec<_>>().join(", ")
    );
    let _ = write!(
        body,
        "    for (i = 0; i < {}; i++) {{\n        sgsc_decode(&bits, widths[i], 1, &value);\n        printf(\"%ld\\n\", (long)value);\n    }}\n    sgsc_decode(&bits, 0, 1, &value);\n    printf(\"%ld\\n\", (long)value);",
        codes.len()
    );
    let read = run(&body);
    let mut expected: Vec<String> = codes.iter().map(|(_, code)| code.to_string()).collect();
    expected.push("0".into()); // width 0 reads nothing and gives 0
    assert_eq!(read, expected);
    // A hand value: 3-bit codes 1, -1, 2 are the bytes 0b1011_1001, 0b0000_0000.
    // Decoded as one row of three.
    let hand = run("    static const uint8_t bytes[4] = {0xb9, 0, 0, 0};\n    sgsc_bits bits;\n    sgsc_weight row[3];\n    int i;\n    bits.bytes = bytes;\n    bits.position = 0;\n    sgsc_decode(&bits, 3, 3, row);\n    for (i = 0; i < 3; i++) {\n        printf(\"%ld\\n\", (long)row[i]);\n    }");
    assert_eq!(hand, vec!["1", "-1", "2"]);
}

#[test]
fn rounding_shifts_and_saturation_match_the_rust_arithmetic() {
    let values: [i64; 12] = [
        0,
        1,
        -1,
        5,
        -5,
        6,
        -6,
        7,
        -7,
        (1 << 61) + 12345,
        -(1 << 61) - 12345,
        -(1 << 62) + (1 << 31),
    ];
    let shifts = [0u32, 1, 2, 3, 17, 31, 40, 62];
    let mut body = String::new();
    let mut expected = Vec::new();
    for &value in &values {
        for &shift in &shifts {
            let _ = writeln!(
                body,
                "    printf(\"%lld\\n\", (long long)sgsc_round_shift(INT64_C({value}), {shift}u));"
            );
            expected.push(round_shift(value, shift).to_string());
        }
    }
    for (value, low, high) in [
        (128i64, -128i32, 127i32),
        (-129, -128, 127),
        (127, -128, 127),
        (-128, -128, 127),
        (-1, 0, 255),
        (256, 0, 255),
        (i64::from(i32::MAX) + 1, i32::MIN, i32::MAX),
        (i64::from(i32::MIN) - 1, i32::MIN, i32::MAX),
    ] {
        let low_text = if low == i32::MIN {
            "(-2147483647 - 1)".to_string()
        } else {
            low.to_string()
        };
        let _ = writeln!(
            body,
            "    printf(\"%ld\\n\", (long)sgsc_saturate(INT64_C({value}), {low_text}, {high}));"
        );
        expected.push(saturate(value, low, high).to_string());
    }
    // Signed and unsigned byte loads at the edges.
    body.push_str("    {\n        static const uint8_t codes[4] = {0, 127, 128, 255};\n        printf(\"%ld %ld %ld %ld\\n\", (long)sgsc_load(codes, 0, 1), (long)sgsc_load(codes, 1, 1), (long)sgsc_load(codes, 2, 1), (long)sgsc_load(codes, 3, 1));\n        printf(\"%ld %ld\\n\", (long)sgsc_load(codes, 2, 0), (long)sgsc_load(codes, 3, 0));\n    }\n");
    expected.push("0 127 -128 -1".into());
    expected.push("128 255".into());
    assert_eq!(run(&body), expected);
}
