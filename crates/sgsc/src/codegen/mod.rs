//! Code generation: an image classifier's integer plan ([`sgsc_runtime::integer::Plan`]) as a
//! self-contained C99 library for microcontrollers (`sgsc export --format c`).
//!
//! - `model.h` declares `int sgsc_predict(const uint8_t *pixels, int32_t *logits)` (it returns the
//!   class), the sizes as macros, and the class names;
//! - `model.c` holds the weights as `const` arrays bit-packed at each row's width (they go to
//!   flash), the integer kernels of `kernels.c` (the arithmetic of `docs/integer.md`, as the Rust
//!   integer path computes it), and one static activation arena sized here: no malloc, no floating
//!   point, nothing from libc beyond `stdint.h` and `string.h`;
//! - `example_main.c` reads images from a file and prints predictions (a host program).
//!
//! The arena holds the tensors alive at each step, each placed at the lowest offset free of the
//! others (the first fit), so that consecutive layers ping-pong between two regions.

use crate::config::TargetMeasure;
use crate::error::{Error, Result};
use sgsc_runtime::bits::BitWriter;
use sgsc_runtime::integer::arith::Multiplier;
use sgsc_runtime::integer::plan::{Op, OutputStage, Plan};
use sgsc_runtime::model::{PackedModel, QuantizedMatrix};
use sgsc_runtime::ConvShape;
use std::collections::BTreeSet;
use std::fmt::Write;

/// The integer kernels, included in every `model.c`.
const KERNELS: &str = include_str!("kernels.c");
/// The example host program.
const EXAMPLE_MAIN: &str = include_str!("example_main.c");

/// The widest weight code the generated C reads.
pub const MAX_C_WIDTH: u8 = 16;

/// Flash bytes of the kernels' code and the compiler's helpers that it calls, for Cortex-M0 at
/// `-Os` (`scripts/mcu.sh`): the MNIST CNN's build holds 1,594 B of model code and 1,024 B of
/// libgcc's 64-bit multiply and divisions, rounded up.
pub const CODE_BYTES: usize = 2_700;

/// Stack bytes of the deepest call besides the row stream's recursion, on Cortex-M0 at `-Os`
/// (`arm-none-eabi-gcc -fstack-usage`, the MNIST CNN's build): `sgsc_predict` 48 B, the
/// convolution 304 B with a 5x5 kernel and 24-wide rows (148 B of them fixed, 12 B per kernel
/// side and 4 B per output column on top), `sgsc_apply` 24 B.
const STACK_FIXED_BYTES: usize = 48 + 148 + 24;

/// Stack bytes of each level of the row stream's recursion (`sgsc_pull`, same build).
const STACK_PER_STREAM_STAGE: usize = 120;

/// The size a target counts of a model whose `.sgsc` file is `file`: the file's length, or the
/// flash estimate of its C build ([`flash_estimate`]).
pub fn measured_size(file: &[u8], measure: TargetMeasure) -> Result<usize> {
    match measure {
        TargetMeasure::File => Ok(file.len()),
        TargetMeasure::Flash => flash_estimate(&sgsc_runtime::format::decode(file)?),
    }
}

/// The flash bytes of `packed`'s C build, computed without compiling: its weights and
/// constants as [`generate`] writes them (activation ranges do not change their size), plus
/// [`CODE_BYTES`]. What `--target-flash` steers on; `scripts/mcu.sh` measures the real build.
pub fn flash_estimate(packed: &PackedModel) -> Result<usize> {
    let input = match *packed.metadata.input.as_slice() {
        [channels, height, width] => [channels, height, width],
        ref other => {
            return Err(Error::Model(format!(
                "a flash size is for image classifiers (input {other:?})"
            )))
        }
    };
    let plan = Plan::new(packed, &vec![1.0; packed.layers.len()], 8)?;
    let library = generate(&plan, input, &[])?;
    Ok(library.weight_bytes + library.constant_bytes + CODE_BYTES)
}

/// The three files of a model's C library, and what they hold.
#[derive(Debug, Clone, PartialEq)]
pub struct CLibrary {
    /// `model.h`.
    pub header: String,
    /// `model.c`.
    pub source: String,
    /// `example_main.c`.
    pub example: String,
    /// Bytes of the bit-packed weight codes and their row widths.
    pub weight_bytes: usize,
    /// Bytes of every other constant: per-channel multipliers, shifts, biases, offsets, the
    /// input table and the operations' descriptions.
    pub constant_bytes: usize,
    /// Bytes of the activation arena (the largest set of tensors alive at once).
    pub arena_bytes: usize,
    /// Bytes of the buffer that holds one decoded weight row.
    pub row_bytes: usize,
    /// An estimate of the stack's peak on a Cortex-M0 (the call chain's frames as that
    /// compiler lays them out; `scripts/mcu.sh` measures the real high-water mark).
    pub stack_bytes: usize,
}

/// A tensor placed in the arena: `[channels, height, width]` codes from `offset`, whole.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Placed {
    offset: usize,
    shape: (usize, usize, usize),
    signed: bool,
}

impl Placed {
    fn size(&self) -> usize {
        self.shape.0 * self.shape.1 * self.shape.2
    }
}

/// First-fit placement of tensors in one arena.
#[derive(Debug, Default)]
struct Arena {
    live: Vec<(usize, usize)>,
    peak: usize,
}

impl Arena {
    /// Places `size` bytes at the lowest offset (a multiple of 4) that overlaps no live tensor.
    fn place(&mut self, size: usize) -> usize {
        let mut spans = self.live.clone();
        spans.sort_unstable();
        let mut offset = 0;
        for (start, length) in spans {
            if offset + size <= start {
                break;
            }
            offset = offset.max((start + length).next_multiple_of(4));
        }
        self.live.push((offset, size));
        self.peak = self.peak.max(offset + size);
        offset
    }

    fn free(&mut self, offset: usize) {
        if let Some(position) = self.live.iter().position(|&(start, _)| start == offset) {
            self.live.swap_remove(position);
        }
    }
}

/// The parts of `kernels.c` that `used` names: its opening comment, the `common` section, and
/// each used section, in file order.
fn kernel_sections(used: &BTreeSet<&str>) -> String {
    let mut sections = KERNELS.split("/* kernel: ");
    let mut text = sections.next().unwrap_or_default().to_string();
    for section in sections {
        let name = section.split(" */").next().unwrap_or_default();
        if name == "common" || used.contains(name) {
            text.push_str("/* kernel: ");
            text.push_str(section);
        }
    }
    text
}

/// Output side of a window (the plan's shapes are validated).
fn side(input: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    (input + 2 * padding - kernel) / stride + 1
}

/// C source text for the values of an array, 16 to a line.
fn values<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|item| item.to_string()).collect();
    items
        .chunks(16)
        .map(|line| format!("    {}", line.join(", ")))
        .collect::<Vec<_>>()
        .join(",\n")
}

/// An `int32_t` literal (the most negative one cannot be written directly).
fn int32(value: i32) -> String {
    if value == i32::MIN {
        "(-2147483647 - 1)".into()
    } else {
        value.to_string()
    }
}

/// A C string literal.
fn string_literal(text: &str) -> String {
    let mut literal = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => literal.push_str("\\\""),
            '\\' => literal.push_str("\\\\"),
            c if c.is_ascii_graphic() || c == ' ' => literal.push(c),
            c => {
                let mut bytes = [0u8; 4];
                for byte in c.encode_utf8(&mut bytes).bytes() {
                    let _ = write!(literal, "\\{byte:03o}");
                }
            }
        }
    }
    literal.push('"');
    literal
}

/// Writes the C text of the plan's constants and calls.
struct Writer {
    /// Declarations of constants, before `sgsc_predict`.
    constants: String,
    /// The body of `sgsc_predict`.
    calls: String,
    weight_bytes: usize,
    constant_bytes: usize,
    row_columns: usize,
    arena: Arena,
    /// The sections of `kernels.c` that the calls use.
    kernels: BTreeSet<&'static str>,
    /// Views declared so far.
    views: usize,
    /// The largest kernel side of a convolution or pooling.
    max_kernel: usize,
    /// The widest output row of a convolution.
    max_out_width: usize,
}

impl Writer {
    /// A line of `sgsc_predict`'s body that calls `kernel`.
    fn call(&mut self, kernel: &'static str, line: String) {
        self.kernels.insert(kernel);
        self.calls.push_str(&line);
        self.calls.push('\n');
    }

    /// A constant `sgsc_view` of `ring` rows per channel from arena offset `offset`; its name.
    fn view(&mut self, offset: usize, ring: usize, signed: bool) -> String {
        let name = format!("sgsc_view{}", self.views);
        self.views += 1;
        self.constant_bytes += 8;
        let _ = writeln!(
            self.constants,
            "static const sgsc_view {name} = {{sgsc_arena + {offset}, {ring}, {}}};",
            u8::from(signed)
        );
        name
    }

    /// The view of a whole tensor.
    fn whole(&mut self, tensor: Placed) -> String {
        self.view(tensor.offset, tensor.shape.1.max(1), tensor.signed)
    }

    fn array(&mut self, kind: &str, name: &str, bytes_each: usize, items: Vec<String>) {
        self.constant_bytes += bytes_each * items.len();
        let _ = writeln!(
            self.constants,
            "static const {kind} {name}[{}] = {{\n{}\n}};",
            items.len(),
            values(items)
        );
    }

    /// The packed codes and row widths of `weights` as `{name}_codes` and `{name}_widths`.
    fn weights(&mut self, name: &str, weights: &QuantizedMatrix) -> Result<()> {
        if let Some(&width) = weights.widths.iter().find(|&&w| w > MAX_C_WIDTH) {
            return Err(Error::Model(format!(
                "a row of {width}-bit codes: the C export reads at most {MAX_C_WIDTH} bits"
            )));
        }
        let mut packed = BitWriter::new();
        for (row, &width) in weights.widths.iter().enumerate() {
            if width == 0 {
                continue;
            }
            for &code in &weights.codes[row * weights.columns..][..weights.columns] {
                packed.push(code, u32::from(width));
            }
        }
        let mut bytes = packed.finish();
        // `sgsc_decode` reads three bytes at a time: two of padding keep it inside the array.
        bytes.extend([0, 0]);
        self.weight_bytes += bytes.len() + weights.widths.len();
        let _ = writeln!(
            self.constants,
            "static const uint8_t {name}_codes[{}] = {{\n{}\n}};",
            bytes.len(),
            values(bytes.iter())
        );
        let _ = writeln!(
            self.constants,
            "static const uint8_t {name}_widths[{}] = {{\n{}\n}};",
            weights.widths.len(),
            values(weights.widths.iter())
        );
        self.row_columns = self.row_columns.max(weights.columns);
        Ok(())
    }

    /// The arrays of an output stage, and its initializer.
    fn stage(&mut self, name: &str, stage: &OutputStage) -> String {
        let bias = if stage.bias.iter().any(|&b| b != 0) {
            self.array(
                "int32_t",
                &format!("{name}_bias"),
                4,
                stage.bias.iter().map(|&b| int32(b)).collect(),
            );
            format!("{name}_bias")
        } else {
            "0".into()
        };
        let offset = if stage.offsets.iter().any(|&o| o != 0) {
            self.array(
                "int64_t",
                &format!("{name}_offset"),
                8,
                stage
                    .offsets
                    .iter()
                    .map(|&o| format!("INT64_C({o})"))
                    .collect(),
            );
            format!("{name}_offset")
        } else {
            "0".into()
        };
        self.multipliers(name, &stage.multipliers);
        format!(
            "{{{bias}, {name}_multiplier, {name}_shift, {offset}, {}, {}, {}}}",
            u8::from(stage.relu_first),
            int32(stage.low),
            int32(stage.high)
        )
    }

    /// `{name}_multiplier` and `{name}_shift`.
    fn multipliers(&mut self, name: &str, multipliers: &[Multiplier]) {
        self.array(
            "int32_t",
            &format!("{name}_multiplier"),
            4,
            multipliers.iter().map(|m| int32(m.multiplier)).collect(),
        );
        self.array(
            "uint8_t",
            &format!("{name}_shift"),
            1,
            multipliers.iter().map(|m| m.shift.to_string()).collect(),
        );
    }

    /// A convolution's constant description `{name}`, for `shape` in `groups` groups.
    fn conv(
        &mut self,
        name: &str,
        shape: &ConvShape,
        groups: usize,
        weights: &QuantizedMatrix,
        stage: Option<&OutputStage>,
    ) -> Result<()> {
        let (channels, height, width) = shape.input;
        for value in [
            channels,
            height,
            width,
            shape.out_channels,
            shape.kernel,
            shape.stride,
            shape.padding,
        ] {
            check_dimension(value, "a convolution or linear layer's dimension")?;
        }
        self.weights(name, weights)?;
        let stage = match stage {
            Some(stage) => self.stage(name, stage),
            None => "{0, 0, 0, 0, 0, 0, 0}".into(),
        };
        let (oh, ow) = (
            side(height, shape.kernel, shape.stride, shape.padding),
            side(width, shape.kernel, shape.stride, shape.padding),
        );
        self.constant_bytes += 20 + 28;
        self.max_kernel = self.max_kernel.max(shape.kernel);
        self.max_out_width = self.max_out_width.max(ow);
        let _ = writeln!(
            self.constants,
            "static const sgsc_conv {name} = {{{channels}, {height}, {width}, {}, {}, {}, {}, {groups}, {oh}, {ow}, {name}_codes, {name}_widths, {stage}}};",
            shape.out_channels, shape.kernel, shape.stride, shape.padding
        );
        Ok(())
    }
}

/// Refuses a dimension that the C descriptions (16-bit fields) cannot hold.
fn check_dimension(value: usize, what: &str) -> Result<()> {
    if value > usize::from(u16::MAX) {
        return Err(Error::Model(format!(
            "{what} of {value}: the C export's descriptions hold at most {}",
            u16::MAX
        )));
    }
    Ok(())
}

/// Whether `op` can run row by row in a stream: convolutions and poolings.
fn streams(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv { .. } | Op::MaxPool { .. } | Op::AvgPool { .. }
    )
}

/// The output shape of a streaming operation, the input rows one of its rows reads (kernel,
/// stride, padding), and the output's sign given the input's.
fn stream_shape(op: &Op, signed: bool) -> ((usize, usize, usize), (usize, usize, usize), bool) {
    match op {
        Op::Conv { shape, stage, .. } => {
            let (_, h, w) = shape.input;
            let (k, s, p) = (shape.kernel, shape.stride, shape.padding);
            (
                (shape.out_channels, side(h, k, s, p), side(w, k, s, p)),
                (k, s, p),
                stage.low < 0,
            )
        }
        Op::MaxPool { input, pool } | Op::AvgPool { input, pool, .. } => {
            let (c, h, w) = *input;
            let (k, s, p) = (pool.kernel, pool.stride(), pool.padding);
            ((c, side(h, k, s, p), side(w, k, s, p)), (k, s, p), signed)
        }
        _ => ((0, 0, 0), (1, 1, 0), signed),
    }
}

/// The constant description `name` of a pooling.
fn pool_description(writer: &mut Writer, name: &str, op: &Op) -> Result<()> {
    let (Op::MaxPool { input, pool } | Op::AvgPool { input, pool, .. }) = op else {
        return Ok(());
    };
    let (c, h, w) = *input;
    let (kernel, stride, padding) = (pool.kernel, pool.stride(), pool.padding);
    let (oh, ow) = (
        side(h, kernel, stride, padding),
        side(w, kernel, stride, padding),
    );
    for value in [c, h, w, kernel, stride, padding] {
        check_dimension(value, "a pooling dimension")?;
    }
    let (maximum, multiplier) = match op {
        Op::AvgPool { multiplier, .. } => (0, *multiplier),
        _ => (
            1,
            Multiplier {
                multiplier: 0,
                shift: 0,
            },
        ),
    };
    writer.constant_bytes += 28;
    writer.max_kernel = writer.max_kernel.max(kernel);
    let _ = writeln!(
        writer.constants,
        "static const sgsc_pool {name} = {{{c}, {h}, {w}, {kernel}, {stride}, {padding}, {oh}, {ow}, {maximum}, {}, {}}};",
        int32(multiplier.multiplier),
        multiplier.shift
    );
    Ok(())
}

/// The C library of `plan`, an image classifier reading `[channels, height, width]` pixels,
/// with `classes` (its class names, or the class numbers when it has none).
///
/// The leading convolutions and poolings run as a **stream**, row by row: each keeps only the
/// rows of its output that the next still reads (the next one's kernel rows), and the last one
/// writes its whole output. The paper CNN's first convolution writes 24x24x32 bytes whole, and
/// 5 of its rows streamed. The rest runs layer by layer on whole tensors.
pub fn generate(plan: &Plan, input: [usize; 3], classes: &[String]) -> Result<CLibrary> {
    let [channels, height, width] = input;
    let input_size = channels * height * width;
    for value in [channels, height, width] {
        check_dimension(value, "an input side")?;
    }
    let mut writer = Writer {
        constants: String::new(),
        calls: String::new(),
        weight_bytes: 0,
        constant_bytes: 0,
        row_columns: 1,
        arena: Arena::default(),
        kernels: BTreeSet::new(),
        views: 0,
        max_kernel: 1,
        max_out_width: 1,
    };
    // Input codes, one table of 256 per channel.
    writer.array(
        "uint8_t",
        "sgsc_input_table",
        1,
        plan.input
            .table
            .iter()
            .map(|&code| (code & 0xff).to_string())
            .collect(),
    );
    let table_channels = (plan.input.table.len() / 256).max(1);
    let last = plan.ops.len().saturating_sub(1);
    let writes_logits = |index: usize, op: &Op| {
        index == last
            && matches!(op, Op::Conv { stage, .. } | Op::Linear { stage, .. } if stage.low == i32::MIN)
    };
    // The stream: stage 0 is the input, stage j the output of operation j - 1.
    let chain = plan
        .ops
        .iter()
        .enumerate()
        .take_while(|(index, op)| streams(op) && !writes_logits(*index, op))
        .count();
    let mut stages = vec![(
        (channels, height, width),
        (1, 1, 0),
        plan.input.activation.low < 0,
    )];
    for op in &plan.ops[..chain] {
        let signed = stages[stages.len() - 1].2;
        stages.push(stream_shape(op, signed));
    }
    let rings: Vec<usize> = (0..stages.len())
        .map(|j| {
            let rows = stages[j].0 .1.max(1);
            match plan.ops.get(j).filter(|_| j < chain) {
                Some(consumer) => stream_shape(consumer, false).1 .0.min(rows),
                None => rows,
            }
        })
        .collect();
    let offsets: Vec<usize> = stages
        .iter()
        .zip(&rings)
        .map(|(((c, _, w), _, _), ring)| writer.arena.place(c * ring * w))
        .collect();
    for (index, op) in plan.ops[..chain].iter().enumerate() {
        let name = format!("sgsc_op{index}");
        match op {
            Op::Conv {
                shape,
                groups,
                weights,
                stage,
            } => writer.conv(&name, shape, *groups, weights, Some(stage))?,
            _ => pool_description(&mut writer, &name, op)?,
        }
    }
    if chain > 0 {
        let entries: Vec<String> = stages
            .iter()
            .enumerate()
            .map(|(j, ((_, h, _), (k, s, p), signed))| {
                let (kind, op) = match j.checked_sub(1).map(|i| &plan.ops[i]) {
                    None => (0, "0".to_string()),
                    Some(Op::Conv { .. }) => (1, format!("&sgsc_op{}", j - 1)),
                    Some(_) => (2, format!("&sgsc_op{}", j - 1)),
                };
                let (k, s, p) = if j == 0 { (1, 1, 0) } else { (*k, *s, *p) };
                format!(
                    "    {{{kind}, {op}, {{sgsc_arena + {}, {}, {}}}, {h}, {k}, {s}, {p}}}",
                    offsets[j],
                    rings[j],
                    u8::from(*signed)
                )
            })
            .collect();
        writer.constant_bytes += 20 * entries.len();
        let _ = writeln!(
            writer.constants,
            "static const sgsc_stream sgsc_streams[{}] = {{\n{}\n}};",
            entries.len(),
            entries.join(",\n")
        );
        for kernel in ["rows", "convolve", "pooling"] {
            writer.kernels.insert(kernel);
        }
        let _ = writeln!(
            writer.calls,
            "    {{\n        uint16_t done[{}] = {{0}};\n        sgsc_pull(sgsc_streams, {chain}u, {}u, done, pixels, sgsc_row);\n    }}",
            stages.len(),
            stages[chain].0 .1
        );
    } else {
        let view = writer.view(offsets[0], rings[0], stages[0].2);
        let _ = writeln!(
            writer.calls,
            "    for (i = 0; i < SGSC_INPUT_HEIGHT; i++) {{\n        sgsc_input_row(pixels, &{view}, i);\n    }}"
        );
    }
    for &offset in &offsets[..chain] {
        writer.arena.free(offset);
    }
    let (shape, _, signed) = stages[chain];
    let mut current = Placed {
        offset: offsets[chain],
        shape,
        signed,
    };
    let mut kept: Vec<Placed> = Vec::new();
    let mut logits_written = false;
    let arena = |offset: usize| format!("sgsc_arena + {offset}");
    for (index, op) in plan.ops.iter().enumerate().skip(chain) {
        let name = format!("sgsc_op{index}");
        let input_signed = u8::from(current.signed);
        match op {
            Op::Conv {
                shape,
                groups,
                weights,
                stage,
            } => {
                writer.conv(&name, shape, *groups, weights, Some(stage))?;
                let (out_shape, _, _) = stream_shape(op, current.signed);
                current = write_dense(
                    &mut writer,
                    &name,
                    current,
                    out_shape,
                    stage,
                    writes_logits(index, op),
                    &mut logits_written,
                    &kept,
                );
            }
            Op::Linear { weights, stage } => {
                let shape = ConvShape {
                    input: (weights.columns, 1, 1),
                    out_channels: weights.rows,
                    kernel: 1,
                    stride: 1,
                    padding: 0,
                };
                writer.conv(&name, &shape, 1, weights, Some(stage))?;
                current.shape = (current.size(), 1, 1);
                current = write_dense(
                    &mut writer,
                    &name,
                    current,
                    (weights.rows, 1, 1),
                    stage,
                    writes_logits(index, op),
                    &mut logits_written,
                    &kept,
                );
            }
            Op::Affine { plane, stage } => {
                let stage_text = writer.stage(&name, stage);
                let _ = writeln!(
                    writer.constants,
                    "static const sgsc_stage {name} = {stage_text};"
                );
                let output = place_after(&mut writer.arena, current, current.shape, &kept);
                writer.call(
                    "affine",
                    format!(
                        "    sgsc_affine(&{name}, {}u, {plane}u, {}, {input_signed}, {});",
                        stage.multipliers.len(),
                        arena(current.offset),
                        arena(output.offset)
                    ),
                );
                current = Placed {
                    signed: stage.low < 0,
                    ..output
                };
            }
            Op::Relu => {
                if current.signed {
                    if kept.iter().any(|k| k.offset == current.offset) {
                        // The block keeps this tensor as it is: rectify a copy.
                        let output = writer.arena.place(current.size());
                        let _ = writeln!(
                            writer.calls,
                            "    memcpy({}, {}, {}u);",
                            arena(output),
                            arena(current.offset),
                            current.size()
                        );
                        current.offset = output;
                    }
                    writer.call(
                        "relu",
                        format!(
                            "    sgsc_relu({}, {}u);",
                            arena(current.offset),
                            current.size()
                        ),
                    );
                }
                current.signed = false;
            }
            Op::MaxPool { .. } | Op::AvgPool { .. } => {
                pool_description(&mut writer, &name, op)?;
                let (out_shape, _, _) = stream_shape(op, current.signed);
                let output = place_after(&mut writer.arena, current, out_shape, &kept);
                let (view_in, view_out) = (writer.whole(current), writer.whole(output));
                writer.call(
                    "pooling",
                    format!(
                        "    sgsc_pooling(&{name}, &{view_in}, &{view_out}, 0, {}u);",
                        out_shape.1
                    ),
                );
                current = output;
            }
            Op::GlobalAvgPool { plane, multiplier } => {
                let plane = (*plane).max(1);
                let channels = current.size() / plane;
                let output = place_after(&mut writer.arena, current, (channels, 1, 1), &kept);
                writer.call(
                    "global_average",
                    format!(
                        "    sgsc_global_average({channels}u, {plane}u, {}, {}u, {}, {input_signed}, {});",
                        int32(multiplier.multiplier),
                        multiplier.shift,
                        arena(current.offset),
                        arena(output.offset)
                    ),
                );
                current = output;
            }
            Op::Keep => kept.push(current),
            Op::Add {
                projection,
                plane,
                block_multipliers,
                kept_multipliers,
                shifts,
                low,
                high,
            } => {
                let skip = kept
                    .pop()
                    .ok_or_else(|| Error::Model("an add without a residual block".into()))?;
                let channels = block_multipliers.len();
                let projected = match projection {
                    Some((shape, weights)) => {
                        let projection = format!("{name}_projection");
                        writer.conv(&projection, shape, 1, weights, None)?;
                        let offset = writer.arena.place(4 * channels * plane);
                        let view = writer.whole(skip);
                        let rows = side(shape.input.1, 1, shape.stride, 0);
                        writer.call(
                            "convolve",
                            format!(
                                "    sgsc_convolve(&{projection}, &{view}, SGSC_ACCUMULATORS, 0, (int32_t *)(void *)({}), sgsc_row, 0, {rows}u);",
                                arena(offset)
                            ),
                        );
                        Some(offset)
                    }
                    None => None,
                };
                writer.array(
                    "int32_t",
                    &format!("{name}_block"),
                    4,
                    block_multipliers.iter().map(|&m| int32(m)).collect(),
                );
                writer.array(
                    "int32_t",
                    &format!("{name}_kept"),
                    4,
                    kept_multipliers.iter().map(|&m| int32(m)).collect(),
                );
                writer.array(
                    "uint8_t",
                    &format!("{name}_shift"),
                    1,
                    shifts.iter().map(|s| s.to_string()).collect(),
                );
                let _ = writeln!(
                    writer.constants,
                    "static const sgsc_add {name} = {{{channels}, {plane}, {name}_block, {name}_kept, {name}_shift, {}, {}}};",
                    int32(*low),
                    int32(*high)
                );
                let output = place_after(&mut writer.arena, current, current.shape, &kept);
                writer.call(
                    "adding",
                    format!(
                        "    sgsc_adding(&{name}, {}, {input_signed}, {}, {}, {}, {});",
                        arena(current.offset),
                        arena(skip.offset),
                        u8::from(skip.signed),
                        projected.map_or("0".into(), |offset| format!(
                            "(const int32_t *)(const void *)({})",
                            arena(offset)
                        )),
                        arena(output.offset)
                    ),
                );
                if let Some(offset) = projected {
                    writer.arena.free(offset);
                }
                if !kept.iter().any(|k| k.offset == skip.offset) {
                    writer.arena.free(skip.offset);
                }
                current = Placed {
                    signed: *low < 0,
                    ..output
                };
            }
        }
    }
    if !logits_written {
        let _ = writeln!(
            writer.calls,
            "    for (i = 0; i < SGSC_CLASSES; i++) {{\n        logits[i] = sgsc_load({}, i, {});\n    }}",
            arena(current.offset),
            u8::from(current.signed)
        );
    }
    let widest = plan
        .ops
        .iter()
        .flat_map(|op| match op {
            Op::Conv { weights, .. } | Op::Linear { weights, .. } => vec![weights],
            Op::Add {
                projection: Some((_, weights)),
                ..
            } => vec![weights],
            _ => Vec::new(),
        })
        .flat_map(|weights| weights.widths.iter().copied())
        .max()
        .unwrap_or(0);
    let weight_type = if widest <= 8 { "int8_t" } else { "int16_t" };
    let row_bytes = writer.row_columns * if widest <= 8 { 1 } else { 2 };
    let arena_bytes = writer.arena.peak.next_multiple_of(4).max(4);
    let names: Vec<String> = (0..plan.outputs)
        .map(|class| string_literal(classes.get(class).map_or(&class.to_string(), |name| name)))
        .collect();
    let header = format!(
        "/* Generated by sgsc (`sgsc export --format c`): an integer-only image classifier.\n * The arithmetic is docs/integer.md's; logits are 32-bit, the real value of one step is\n * SGSC_LOGIT_SCALE (given for the caller: nothing here computes in floating point). */\n#ifndef SGSC_MODEL_H\n#define SGSC_MODEL_H\n\n#include <stdint.h>\n\n#define SGSC_INPUT_CHANNELS {channels}\n#define SGSC_INPUT_HEIGHT {height}\n#define SGSC_INPUT_WIDTH {width}\n#define SGSC_INPUT_SIZE {input_size}\n#define SGSC_CLASSES {}\n#define SGSC_ARENA_BYTES {arena_bytes}\n#define SGSC_ROW_BYTES {row_bytes}\n#define SGSC_WEIGHT_BYTES {}\n#define SGSC_CONSTANT_BYTES {}\n#define SGSC_LOGIT_SCALE {:e}\n\n/* The names of the classes, in the order of the logits. */\nextern const char *const sgsc_class_names[SGSC_CLASSES];\n\n/* Classifies one image of SGSC_INPUT_SIZE pixels (channel-major, one byte each): writes the\n * SGSC_CLASSES logits and returns the class (the first of the largest logits). Not reentrant:\n * the activations live in one static arena. */\nint sgsc_predict(const uint8_t *pixels, int32_t *logits);\n\n#endif\n",
        plan.outputs,
        writer.weight_bytes,
        writer.constant_bytes,
        plan.output_scale
    );
    let input_row = format!(
        "/* Row y of the input codes, from the pixels through their table. */\nstatic void sgsc_input_row(const uint8_t *pixels, const sgsc_view *out, uint32_t y)\n{{\n    uint32_t c, x;\n    for (c = 0; c < SGSC_INPUT_CHANNELS; c++) {{\n        uint8_t *line = out->codes + c * (uint32_t)out->ring * SGSC_INPUT_WIDTH +\n                        sgsc_line(out, (int32_t)y, SGSC_INPUT_WIDTH);\n        const uint8_t *source = pixels + (c * SGSC_INPUT_HEIGHT + y) * SGSC_INPUT_WIDTH;\n        const uint8_t *table = sgsc_input_table + (c % {table_channels}u) * 256u;\n        for (x = 0; x < SGSC_INPUT_WIDTH; x++) {{\n            line[x] = table[source[x]];\n        }}\n    }}\n}}\n"
    );
    let source = format!(
        "/* Generated by sgsc (`sgsc export --format c`). C99; nothing from libc beyond stdint.h\n * and string.h, no floating point, no malloc. */\n#include <stdint.h>\n#include <string.h>\n\n#include \"model.h\"\n\ntypedef {weight_type} sgsc_weight;\n#define SGSC_MAX_KERNEL {}\n#define SGSC_MAX_OUT_WIDTH {}\n\n/* The activations: every tensor alive at once fits here. */\nstatic int32_t sgsc_arena_words[SGSC_ARENA_BYTES / 4];\n#define sgsc_arena ((uint8_t *)sgsc_arena_words)\n/* One decoded weight row. */\nstatic sgsc_weight sgsc_row[{}];\n\n{}\n/* The weights (bit-packed codes and row widths) and the per-channel constants. */\n{}\n{input_row}\nconst char *const sgsc_class_names[SGSC_CLASSES] = {{\n{}\n}};\n\nint sgsc_predict(const uint8_t *pixels, int32_t *logits)\n{{\n    uint32_t i;\n    int best = 0;\n{}    for (i = 1; i < SGSC_CLASSES; i++) {{\n        if (logits[i] > logits[best]) {{\n            best = (int)i;\n        }}\n    }}\n    return best;\n}}\n",
        writer.max_kernel,
        writer.max_out_width,
        writer.row_columns,
        kernel_sections(&writer.kernels),
        writer.constants,
        values(names),
        writer.calls
    );
    Ok(CLibrary {
        header,
        source,
        example: EXAMPLE_MAIN.to_string(),
        weight_bytes: writer.weight_bytes,
        constant_bytes: writer.constant_bytes,
        arena_bytes,
        row_bytes,
        stack_bytes: STACK_FIXED_BYTES
            + 12 * writer.max_kernel
            + 4 * writer.max_out_width
            + if chain > 0 {
                STACK_PER_STREAM_STAGE * stages.len()
            } else {
                0
            },
    })
}

/// Places an operation's output of `shape` while its input is still alive, then frees the
/// input unless a residual block keeps it.
fn place_after(
    arena: &mut Arena,
    input: Placed,
    shape: (usize, usize, usize),
    kept: &[Placed],
) -> Placed {
    let offset = arena.place(shape.0 * shape.1 * shape.2);
    if !kept.iter().any(|k| k.offset == input.offset) {
        arena.free(input.offset);
    }
    Placed {
        offset,
        shape,
        signed: input.signed,
    }
}

/// The call of a convolution or linear layer `name` on whole tensors: into the arena, or into
/// the logits when `logits` (the last operation, 32-bit output).
#[allow(clippy::too_many_arguments)]
fn write_dense(
    writer: &mut Writer,
    name: &str,
    input: Placed,
    shape: (usize, usize, usize),
    stage: &OutputStage,
    logits: bool,
    logits_written: &mut bool,
    kept: &[Placed],
) -> Placed {
    let view_in = writer.whole(input);
    if logits {
        writer.call(
            "convolve",
            format!(
                "    sgsc_convolve(&{name}, &{view_in}, SGSC_WIDE, 0, logits, sgsc_row, 0, {}u);",
                shape.1
            ),
        );
        *logits_written = true;
        return input;
    }
    let output = place_after(&mut writer.arena, input, shape, kept);
    let view_out = writer.view(output.offset, shape.1.max(1), stage.low < 0);
    writer.call(
        "convolve",
        format!(
            "    sgsc_convolve(&{name}, &{view_in}, SGSC_CODES, &{view_out}, 0, sgsc_row, 0, {}u);",
            shape.1
        ),
    );
    Placed {
        signed: stage.low < 0,
        ..output
    }
}
