#!/usr/bin/env bash
# Runs a packed image classifier on emulated microcontrollers and checks it against the Rust
# integer path:
#   bash scripts/mcu.sh MODEL.sgsc [IMAGES LABELS] [--count N] [--cores "cortex-m0 cortex-m3"]
# IMAGES and LABELS are IDX files (plain or .gz; default: MNIST's test set from $SGSC_DATA_DIR
# or ./data); the first N images run (default 100). Installs Debian's gcc-arm-none-eabi,
# libnewlib-arm-none-eabi and qemu-system-arm when missing, exports the model's C library
# (`sgsc export --format c`), builds it with the project's startup file and linker scripts
# (scripts/mcu/) for
#   cortex-m0: -mcpu=cortex-m0 -mthumb, QEMU machine microbit (nRF51: 256 KB flash, 16 KB RAM),
#   cortex-m3: -mcpu=cortex-m3 -mthumb, QEMU machine mps2-an385,
# with -Os -ffunction-sections -fdata-sections -Wl,--gc-sections, runs the images under
# qemu-system-arm with semihosting, and checks every class and logit against
# `sgsc predict --integer`. Flash is the model's code and constants plus the compiler's helpers
# it calls (from the link map, harness and startup apart); RAM is the model's static data (the
# activation arena and the weight row) plus the stack's high-water mark during inference.
# Instructions: the average inference, counted by a hardware timer under QEMU's
# `-icount shift=7` (one instruction = 128 ns of virtual time: exact counts).
# The last line, one per core:
#   mcu: core=cortex-m0 flash_bytes=N ram_bytes=N instructions=N matched=K/K accuracy=P
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

model=""
images=""
labels=""
count=100
cores="cortex-m0 cortex-m3"
while [ $# -gt 0 ]; do
    case "$1" in
        --count) count="$2"; shift 2 ;;
        --cores) cores="$2"; shift 2 ;;
        -*) echo "mcu.sh: unknown option $1" >&2; exit 2 ;;
        *)
            if [ -z "$model" ]; then model="$1"
            elif [ -z "$images" ]; then images="$1"
            elif [ -z "$labels" ]; then labels="$1"
            else echo "mcu.sh: too many arguments" >&2; exit 2
            fi
            shift ;;
    esac
done
if [ -z "$model" ]; then
    echo "usage: bash scripts/mcu.sh MODEL.sgsc [IMAGES LABELS] [--count N] [--cores LIST]" >&2
    exit 2
fi
data="${SGSC_DATA_DIR:-$root/data}"
images="${images:-$data/mnist/t10k-images-idx3-ubyte.gz}"
labels="${labels:-$data/mnist/t10k-labels-idx1-ubyte.gz}"

if ! command -v arm-none-eabi-gcc >/dev/null || ! command -v qemu-system-arm >/dev/null; then
    echo "mcu.sh: installing gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm >/dev/null
fi
if [ ! -x target/release/sgsc ]; then
    bash scripts/setup-libtorch.sh
    cargo build --release --quiet
fi
sgsc="$root/target/release/sgsc"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The first N images and labels, as one IDX file for `sgsc predict` and raw bytes for the device.
python3 - "$images" "$labels" "$count" "$work" <<'EOF'
import gzip, struct, sys
images, labels, count, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def read(path):
    data = open(path, "rb").read()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
image_bytes, label_bytes = read(images), read(labels)
dims = [struct.unpack(">I", image_bytes[4 + 4 * i:8 + 4 * i])[0] for i in range(image_bytes[3])]
count = min(count, dims[0])
size = 1
for d in dims[1:]:
    size *= d
header = image_bytes[:4] + struct.pack(">I", count) + image_bytes[8:4 + 4 * len(dims)]
pixels = image_bytes[4 + 4 * len(dims):][:count * size]
open(f"{work}/images.idx", "wb").write(header + pixels)
open(f"{work}/images.bin", "wb").write(pixels)
open(f"{work}/labels.bin", "wb").write(label_bytes[8:8 + count])
EOF
"$sgsc" export --model "$model" --format c --out "$work/c" --data-dir "$data"
"$sgsc" predict "$model" --input "$work/images.idx" --integer --data-dir "$data" > "$work/expected.txt"

flags=(-mthumb -Os -std=c99 -ffreestanding -ffunction-sections -fdata-sections -Wall -Wextra
    -DICOUNT_SHIFT=7 -I"$work/c" -Iscripts/mcu)
for core in $cores; do
    case "$core" in
        cortex-m0) cpu=cortex-m0; machine=microbit; script=microbit.ld; board=MACH_MICROBIT ;;
        cortex-m3) cpu=cortex-m3; machine=mps2-an385; script=mps2_an385.ld; board=MACH_MPS2 ;;
        *) echo "mcu.sh: unknown core $core (cortex-m0, cortex-m3)" >&2; exit 2 ;;
    esac
    build="$work/$core"
    mkdir -p "$build"
    for source in "$work/c/model.c" scripts/mcu/harness.c scripts/mcu/semihost.c scripts/mcu/counter.c; do
        arm-none-eabi-gcc "${flags[@]}" -mcpu=$cpu -D$board -c "$source" \
            -o "$build/$(basename "${source%.c}").o"
    done
    arm-none-eabi-gcc "${flags[@]}" -mcpu=$cpu -fno-tree-loop-distribute-patterns \
        -c scripts/mcu/minilibc.c -o "$build/minilibc.o"
    arm-none-eabi-gcc -mcpu=$cpu -mthumb -c scripts/mcu/startup.S -o "$build/startup.o"
    arm-none-eabi-gcc -mcpu=$cpu -mthumb -nostdlib -nostartfiles -Wl,--gc-sections \
        -Lscripts/mcu/ld -T$script -Wl,-Map="$build/prog.map" "$build"/*.o -lgcc -o "$build/prog.elf"
    (cd "$work" && qemu-system-arm -M $machine -display none -monitor none -serial none \
        -chardev stdio,id=semihosting -semihosting-config enable=on,target=native,chardev=semihosting \
        -icount shift=7,align=off,sleep=off -kernel "$build/prog.elf") > "$build/run.txt"
    python3 - "$build" "$work" "$core" <<'EOF'
import re, sys
build, work, core = sys.argv[1:4]
run = open(f"{build}/run.txt").read().splitlines()
expected = open(f"{work}/expected.txt").read().splitlines()
labels = open(f"{work}/labels.bin", "rb").read()
got = [line for line in run if line.startswith("image ")]
figures = dict(line.split("=", 1) for line in run if "=" in line and not line.startswith("image "))
matched = sum(1 for a, b in zip(got, expected) if a == b)
classes = [int(line.split("class ")[1].split()[0]) for line in got]
right = sum(1 for i, c in enumerate(classes) if i < len(labels) and c == labels[i])
# Flash and RAM of the model from the link map: its object, and the compiler's helpers
# (libgcc) and the small C library that its code calls; the harness and startup apart.
flash = ram = 0
section = None
pending = None
for line in open(f"{build}/prog.map"):
    line = line.rstrip("\n")
    head = re.match(r"^(\.\S+)", line)
    if head:
        section = head.group(1)
    match = re.match(r"^ (\.\S+)\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+(\S.*)$", line)
    if not match:
        alone = re.match(r"^ (\.\S+)$", line)
        if alone:
            pending = alone.group(1)
            continue
        rest = re.match(r"^\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+(\S.*)$", line)
        if not (rest and pending):
            continue
        name, size, obj = pending, int(rest.group(1), 16), rest.group(2)
        pending = None
    else:
        name, size, obj = match.group(1), int(match.group(2), 16), match.group(3)
    if section not in (".text", ".data", ".bss", ".ARM.exidx"):
        continue
    if not ("model.o" in obj or "libgcc" in obj or "minilibc.o" in obj):
        continue
    if name.startswith((".text", ".rodata", ".ARM.exidx")):
        flash += size
    elif name.startswith(".data"):
        flash += size
        ram += size
    elif name.startswith((".bss", "COMMON")):
        ram += size
stack = int(figures.get("stack_bytes", "0"))
count = len(expected)
print(f"{core}: {len(got)} images run, {matched} of {count} lines identical to the Rust integer path; "
      f"model flash {flash} B (code and constants), static RAM {ram} B, stack {stack} B")
print(f"mcu: core={core} flash_bytes={flash} ram_bytes={ram + stack} "
      f"instructions={figures.get('instructions_per_inference', '0')} matched={matched}/{count} "
      f"accuracy={100.0 * right / max(len(got), 1):.2f}")
sys.exit(0 if matched == count and len(got) == count else 1)
EOF
done
