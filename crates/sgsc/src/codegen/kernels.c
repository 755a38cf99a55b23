/* The integer kernels of sgsc's generated C: the reference arithmetic of docs/integer.md, in
 * C99 with nothing from libc beyond stdint.h and string.h, no floating point and no malloc.
 * Codes are one byte each: signed tensors hold two's-complement bytes, unsigned ones plain
 * bytes. Weights stay bit-packed at each row's width (least significant bit first, rows one
 * after another, two bytes of padding at the end) and are decoded one row at a time. Each section starts with a `kernel:`
 * line; a model's source holds the sections its operations use. */

/* kernel: common */
/* A reader of bit-packed codes. */
typedef struct {
    const uint8_t *bytes;
    uint32_t position; /* next bit */
} sgsc_bits;

/* The next `count` codes of `width` bits (0 to 16) into `row`, sign-extended (width 0: zeros,
 * nothing read). A code spans at most three bytes; every array of codes ends with two bytes of
 * padding, so all three can be read. The position stays in a register for the whole row. */
static void sgsc_decode(sgsc_bits *bits, uint32_t width, uint32_t count, sgsc_weight *row)
{
    uint32_t bit = bits->position;
    uint32_t mask = (1u << width) - 1u;
    uint32_t sign = (1u << width) >> 1;
    uint32_t i;
    if (width == 0) {
        memset(row, 0, count * sizeof *row);
        return;
    }
    for (i = 0; i < count; i++, bit += width) {
        const uint8_t *at = bits->bytes + (bit >> 3);
        uint32_t value = (uint32_t)at[0] | ((uint32_t)at[1] << 8) | ((uint32_t)at[2] << 16);
        value = (value >> (bit & 7u)) & mask;
        row[i] = (sgsc_weight)((int32_t)(value ^ sign) - (int32_t)sign);
    }
    bits->position = bit;
}

/* The code at `index` of a tensor of one-byte codes: a signed tensor's bytes of 128 and more
 * are negative (`byte - 256`), without a branch. */
static int32_t sgsc_load(const uint8_t *codes, uint32_t index, int is_signed)
{
    int32_t byte = codes[index];
    return byte - ((byte & (is_signed ? 0x80 : 0)) << 1);
}

/* `value / 2^shift` rounded half up, written without shifting a negative number. */
static int64_t sgsc_round_shift(int64_t value, uint32_t shift)
{
    if (shift == 0) {
        return value;
    }
    value += (int64_t)1 << (shift - 1u);
    if (value >= 0) {
        return value >> shift;
    }
    return -((-(value + 1)) >> shift) - 1;
}

static int32_t sgsc_saturate(int64_t value, int32_t low, int32_t high)
{
    return value < low ? low : (value > high ? high : (int32_t)value);
}

/* What turns channel c's 32-bit accumulator into an output code (docs/integer.md). */
typedef struct {
    const int32_t *bias;       /* NULL: no bias */
    const int32_t *multiplier;
    const uint8_t *shift;
    const int64_t *offset;     /* NULL: no offset */
    uint8_t relu_first;
    int32_t low;
    int32_t high;
} sgsc_stage;

static int32_t sgsc_apply(const sgsc_stage *stage, uint32_t c, int32_t accumulator)
{
    int64_t value = (int64_t)accumulator + (stage->bias ? stage->bias[c] : 0);
    if (stage->relu_first && value < 0) {
        value = 0;
    }
    value = value * stage->multiplier[c] + (stage->offset ? stage->offset[c] : 0);
    return sgsc_saturate(sgsc_round_shift(value, stage->shift[c]), stage->low, stage->high);
}

/* Stores an output code. */
static void sgsc_store(uint8_t *codes, uint32_t index, int32_t code)
{
    codes[index] = (uint8_t)(code & 0xff);
}

/* Where the rows of a [channels, height, width] tensor are: a ring of `ring` rows per channel,
 * row y of channel c at codes + (c * ring + y % ring) * width. A whole tensor is the ring of all
 * its rows; a streamed one holds only the rows that the next layer still reads. */
typedef struct {
    uint8_t *codes;
    uint16_t ring;
    uint8_t is_signed;
} sgsc_view;

/* The offset of row y's first code in channel 0 of a view of rows `width` codes wide. */
static uint32_t sgsc_line(const sgsc_view *view, int32_t y, uint32_t width)
{
    return ((uint32_t)y % view->ring) * width;
}

/* kernel: convolve */
/* A convolution (or a linear layer: a 1x1 map) in `groups` groups. Each output channel's row
 * of codes is decoded into `row` once, then each output position takes its dot product. */
typedef struct {
    uint16_t channels, height, width;
    uint16_t out_channels, kernel, stride, padding, groups;
    uint16_t out_height, out_width;
    const uint8_t *codes;
    const uint8_t *widths;
    sgsc_stage stage;
} sgsc_conv;

/* How a convolution's outputs are written. */
enum sgsc_write {
    SGSC_CODES,        /* output codes, one byte each */
    SGSC_ACCUMULATORS, /* raw 32-bit sums (a residual projection) */
    SGSC_WIDE          /* the stage's result as 32-bit values (the logits) */
};

/* Output rows [first_row, end_row) of a convolution, from the rows of `in` that they read,
 * into `out` (or, whole, into `wide`). Each output channel's weights are decoded into `row`
 * once per call; each non-zero weight then multiplies the input codes under it across the
 * output row at once, so a zero weight (most of them at low widths) costs nothing. */
static void sgsc_convolve(const sgsc_conv *conv, const sgsc_view *in, enum sgsc_write write,
                          const sgsc_view *out, int32_t *wide, sgsc_weight *row,
                          uint32_t first_row, uint32_t end_row)
{
    uint32_t group_inputs = conv->channels / conv->groups;
    uint32_t group_outputs = conv->out_channels / conv->groups;
    uint32_t k = conv->kernel;
    uint32_t stride = conv->stride;
    uint32_t columns = group_inputs * k * k;
    uint32_t in_plane = (uint32_t)in->ring * conv->width;
    uint32_t lines[SGSC_MAX_KERNEL];
    uint32_t first_x[SGSC_MAX_KERNEL], end_x[SGSC_MAX_KERNEL];
    int32_t acc[SGSC_MAX_OUT_WIDTH];
    sgsc_bits bits;
    uint32_t c, oy, ox, local, ky, kx;
    bits.bytes = conv->codes;
    bits.position = 0;
    /* For each kx, the outputs ox whose input column ox * stride + kx - padding is inside. */
    for (kx = 0; kx < k; kx++) {
        uint32_t limit = (uint32_t)conv->width + conv->padding;
        first_x[kx] = kx < conv->padding ? (conv->padding - kx + stride - 1) / stride : 0;
        end_x[kx] = limit > kx ? (limit - kx - 1) / stride + 1 : 0;
        if (end_x[kx] > conv->out_width) {
            end_x[kx] = conv->out_width;
        }
        if (first_x[kx] > end_x[kx]) {
            first_x[kx] = end_x[kx];
        }
    }
    for (c = 0; c < conv->out_channels; c++) {
        uint32_t width = conv->widths[c];
        uint32_t first = (c / group_outputs) * group_inputs;
        sgsc_decode(&bits, width, columns, row);
        for (oy = first_row; oy < end_row; oy++) {
            /* The kernel rows inside the input: ky in [ky0, ky1). */
            int32_t y0 = (int32_t)(oy * stride) - conv->padding;
            uint32_t ky0 = y0 < 0 ? (uint32_t)-y0 : 0;
            uint32_t ky1 = y0 + (int32_t)k > conv->height ? (uint32_t)(conv->height - y0) : k;
            for (ox = 0; ox < conv->out_width; ox++) {
                acc[ox] = 0;
            }
            for (ky = ky0; ky < ky1 && width > 0; ky++) {
                lines[ky] = sgsc_line(in, y0 + (int32_t)ky, conv->width);
            }
            for (local = 0; local < group_inputs && width > 0; local++) {
                const uint8_t *map = in->codes + (first + local) * in_plane;
                const sgsc_weight *w = row + local * k * k;
                for (ky = ky0; ky < ky1; ky++) {
                    for (kx = 0; kx < k; kx++) {
                        int32_t weight = w[ky * k + kx];
                        const uint8_t *x;
                        int32_t *a, *a_end;
                        if (weight == 0) {
                            continue;
                        }
                        x = map + lines[ky] + first_x[kx] * stride + kx - conv->padding;
                        a = acc + first_x[kx];
                        a_end = acc + end_x[kx];
                        if (in->is_signed) {
                            for (; a < a_end; a++, x += stride) {
                                *a += weight * ((int32_t)*x - ((int32_t)(*x & 0x80) << 1));
                            }
                        } else {
                            for (; a < a_end; a++, x += stride) {
                                *a += weight * (int32_t)*x;
                            }
                        }
                    }
                }
            }
            for (ox = 0; ox < conv->out_width; ox++) {
                if (write == SGSC_CODES) {
                    sgsc_store(out->codes + c * (uint32_t)out->ring * conv->out_width +
                                   sgsc_line(out, (int32_t)oy, conv->out_width),
                               ox, sgsc_apply(&conv->stage, c, acc[ox]));
                } else {
                    uint32_t index = (c * conv->out_height + oy) * conv->out_width + ox;
                    wide[index] = write == SGSC_WIDE ? sgsc_apply(&conv->stage, c, acc[ox]) : acc[ox];
                }
            }
        }
    }
}

/* kernel: affine */
/* A batch norm on its own: each code through its channel's stage. */
static void sgsc_affine(const sgsc_stage *stage, uint32_t channels, uint32_t plane,
                        const uint8_t *input, int input_signed, uint8_t *output)
{
    uint32_t c, i;
    for (c = 0; c < channels; c++) {
        for (i = 0; i < plane; i++) {
            sgsc_store(output, c * plane + i,
                       sgsc_apply(stage, c, sgsc_load(input, c * plane + i, input_signed)));
        }
    }
}

/* kernel: relu */
/* ReLU on a signed tensor, in place: negative codes become 0. */
static void sgsc_relu(uint8_t *codes, uint32_t count)
{
    uint32_t i;
    for (i = 0; i < count; i++) {
        if (codes[i] >= 128) {
            codes[i] = 0;
        }
    }
}

/* kernel: pooling */
/* Max (`maximum` = 1) or average pooling; an average is the window's sum times a multiplier. */
typedef struct {
    uint16_t channels, height, width, kernel, stride, padding, out_height, out_width;
    uint8_t maximum;
    int32_t multiplier;
    uint8_t shift;
} sgsc_pool;

/* Output rows [first_row, end_row) of a pooling, from the rows of `in` into `out`. */
static void sgsc_pooling(const sgsc_pool *pool, const sgsc_view *in, const sgsc_view *out,
                         uint32_t first_row, uint32_t end_row)
{
    uint32_t c, oy, ox, ky, kx;
    for (c = 0; c < pool->channels; c++) {
        const uint8_t *map = in->codes + c * (uint32_t)in->ring * pool->width;
        uint8_t *output = out->codes + c * (uint32_t)out->ring * pool->out_width;
        for (oy = first_row; oy < end_row; oy++) {
            uint8_t *output_line = output + sgsc_line(out, (int32_t)oy, pool->out_width);
            for (ox = 0; ox < pool->out_width; ox++) {
                int32_t best = -2147483647 - 1;
                int32_t sum = 0;
                for (ky = 0; ky < pool->kernel; ky++) {
                    int32_t y = (int32_t)(oy * pool->stride + ky) - pool->padding;
                    const uint8_t *line;
                    if (y < 0 || y >= pool->height) {
                        continue;
                    }
                    line = map + sgsc_line(in, y, pool->width);
                    for (kx = 0; kx < pool->kernel; kx++) {
                        int32_t x = (int32_t)(ox * pool->stride + kx) - pool->padding;
                        int32_t value;
                        if (x < 0 || x >= pool->width) {
                            continue;
                        }
                        value = sgsc_load(line, (uint32_t)x, in->is_signed);
                        sum += value;
                        if (value > best) {
                            best = value;
                        }
                    }
                }
                sgsc_store(output_line, ox,
                           pool->maximum ? best
                                         : (int32_t)sgsc_round_shift(
                                               (int64_t)sum * pool->multiplier, pool->shift));
            }
        }
    }
}

/* kernel: global_average */
/* Each channel's sum times the multiplier of 1 / plane. */
static void sgsc_global_average(uint32_t channels, uint32_t plane, int32_t multiplier,
                                uint32_t shift, const uint8_t *input, int input_signed,
                                uint8_t *output)
{
    uint32_t c, i;
    for (c = 0; c < channels; c++) {
        int32_t sum = 0;
        for (i = 0; i < plane; i++) {
            sum += sgsc_load(input, c * plane + i, input_signed);
        }
        sgsc_store(output, c, (int32_t)sgsc_round_shift((int64_t)sum * multiplier, shift));
    }
}

/* kernel: adding */
/* A residual add: block codes and kept codes (or projection accumulators), each times its
 * channel's multiplier, at the channel's shift. */
typedef struct {
    uint16_t channels;
    uint32_t plane;
    const int32_t *block_multiplier;
    const int32_t *kept_multiplier;
    const uint8_t *shift;
    int32_t low, high;
} sgsc_add;

static void sgsc_adding(const sgsc_add *add, const uint8_t *block, int block_signed,
                        const uint8_t *kept, int kept_signed, const int32_t *projected,
                        uint8_t *output)
{
    uint32_t c, i;
    for (c = 0; c < add->channels; c++) {
        for (i = 0; i < add->plane; i++) {
            uint32_t index = c * add->plane + i;
            int64_t skip = projected ? projected[index] : sgsc_load(kept, index, kept_signed);
            int64_t sum = (int64_t)sgsc_load(block, index, block_signed) * add->block_multiplier[c] +
                          skip * add->kept_multiplier[c];
            sgsc_store(output, index,
                       sgsc_saturate(sgsc_round_shift(sum, add->shift[c]), add->low, add->high));
        }
    }
}

/* kernel: rows */
/* A chain of layers run row by row: each stage keeps only the rows of its output that the next
 * stage still reads (a ring), and produces a row when the next one needs it. Stage 0 turns
 * pixels into input codes (sgsc_input_row, in model.c). */
typedef struct {
    uint8_t kind;   /* 0: the input, 1: a convolution (sgsc_conv), 2: a pooling (sgsc_pool) */
    const void *op;
    sgsc_view out;  /* where its rows go */
    uint16_t height; /* rows it produces */
    uint16_t kernel, stride, padding; /* which rows of the previous stage a row reads */
} sgsc_stream;

static void sgsc_input_row(const uint8_t *pixels, const sgsc_view *out, uint32_t y);

/* Runs stage `stage` until it has produced `rows` rows (`done` counts each stage's rows),
 * first pulling from the stage before it the rows that they read. */
static void sgsc_pull(const sgsc_stream *stages, uint32_t stage, uint32_t rows, uint16_t *done,
                      const uint8_t *pixels, sgsc_weight *row)
{
    const sgsc_stream *s = &stages[stage];
    while (done[stage] < rows) {
        uint32_t r = done[stage];
        if (stage > 0) {
            int32_t needed = (int32_t)(r * s->stride + s->kernel) - s->padding;
            if (needed > stages[stage - 1].height) {
                needed = stages[stage - 1].height;
            }
            if (needed > 0) {
                sgsc_pull(stages, stage - 1, (uint32_t)needed, done, pixels, row);
            }
        }
        if (s->kind == 0) {
            sgsc_input_row(pixels, &s->out, r);
        } else if (s->kind == 1) {
            sgsc_convolve((const sgsc_conv *)s->op, &stages[stage - 1].out, SGSC_CODES, &s->out,
                          0, row, r, r + 1);
        } else {
            sgsc_pooling((const sgsc_pool *)s->op, &stages[stage - 1].out, &s->out, r, r + 1);
        }
        done[stage] = (uint16_t)(r + 1);
    }
}
