/* The device-side harness of scripts/mcu.sh: reads test images from the host file images.bin
 * (SGSC_INPUT_SIZE bytes each) through semihosting, runs sgsc_predict on each, and prints each
 * image's class and logits as the generated example_main.c does, then the instructions of the
 * average inference (a hardware timer under QEMU's -icount, see counter.h) and the stack's
 * high-water mark during inference. Exits 0, or non-zero on a failure. */
#include <stdint.h>

#include "counter.h"
#include "model.h"
#include "semihost.h"

#define STACK_PAINT 0xC5C5C5C5u /* as startup.S paints */
extern uint32_t _sstack[], _estack[];

static uint32_t stack_pointer(void)
{
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

/* Repaints the free stack below the caller's frame. */
__attribute__((noinline)) static void repaint(void)
{
    volatile uint32_t *p;
    uint32_t limit = stack_pointer() - 64u;
    for (p = _sstack; (uint32_t)p < limit; p++) {
        *p = STACK_PAINT;
    }
}

/* The lowest stack word written since the paint. */
static uint32_t lowest_used(void)
{
    const volatile uint32_t *p = _sstack;
    while (p < _estack && *p == STACK_PAINT) {
        p++;
    }
    return (uint32_t)p;
}

static uint8_t pixels[SGSC_INPUT_SIZE];
static int32_t logits[SGSC_CLASSES];

/* Timer ticks of one call of sgsc_predict, and its class. */
__attribute__((noinline)) static uint32_t timed(int *class)
{
    uint32_t start = cnt_read();
    *class = sgsc_predict(pixels, logits);
    return cnt_read() - start;
}

/* Timer ticks of the same measurement around nothing: the overhead to subtract. */
__attribute__((noinline)) static uint32_t timed_nothing(void)
{
    uint32_t start = cnt_read();
    return cnt_read() - start;
}

int main(void)
{
    int32_t file;
    uint32_t images = 0, sp, lowest;
    uint64_t ticks = 0;
    cnt_init();
    file = sh_open("images.bin");
    if (file < 0) {
        sh_puts("mcu: cannot open images.bin\n");
        return 43;
    }
    repaint();
    sp = stack_pointer();
    while (sh_read(file, pixels, SGSC_INPUT_SIZE) == SGSC_INPUT_SIZE) {
        int class, i;
        ticks += timed(&class) - timed_nothing();
        sh_puts("image ");
        sh_put_i32((int32_t)images++);
        sh_puts(": class ");
        sh_put_i32(class);
        sh_puts(" logits");
        for (i = 0; i < SGSC_CLASSES; i++) {
            sh_puts(" ");
            sh_put_i32(logits[i]);
        }
        sh_puts(" (");
        sh_puts(sgsc_class_names[class]);
        sh_puts(")\n");
    }
    lowest = lowest_used();
    if (images == 0) {
        sh_puts("mcu: no images read\n");
        return 44;
    }
    if (lowest <= (uint32_t)_sstack) {
        sh_puts("mcu: the stack overflowed its region\n");
        return 45;
    }
    sh_puts("instructions_per_inference=");
    sh_put_i32((int32_t)ticks_to_insns((uint32_t)((ticks + images / 2) / images)));
    sh_puts("\nstack_bytes=");
    /* From the harness's stack pointer down: sgsc_predict's frames and timed()'s. */
    sh_put_i32((int32_t)(sp - lowest));
    sh_puts("\n");
    return 0;
}
