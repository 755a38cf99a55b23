/* Instruction counting via a hardware timer under QEMU "-icount shift=S":
 * every guest instruction advances virtual time by exactly 2^S ns, and the
 * QEMU timer models count virtual time. insns = ticks * tick_ns / 2^S.
 * Exact (rounding recovers N) as long as tick_ns / 2^S < 0.5. */
#ifndef COUNTER_H
#define COUNTER_H
#include <stdint.h>

#ifndef ICOUNT_SHIFT
#define ICOUNT_SHIFT 8
#endif

#if defined(MACH_MICROBIT)
/* nRF51 TIMER0 @0x40008000, 16 MHz, 32-bit: tick = 62.5 ns = 125/2 */
#define TICK_NS_NUM 125u
#define TICK_NS_DEN 2u
#elif defined(MACH_MPS2)
/* CMSDK APB TIMER0 @0x40000000, PCLK 25 MHz, 32-bit down: tick = 40 ns */
#define TICK_NS_NUM 40u
#define TICK_NS_DEN 1u
#else
#error "define MACH_MICROBIT or MACH_MPS2"
#endif
/* SysTick with CLKSOURCE=1 runs at the CPU clock, which is the same
 * frequency (16 MHz nRF51 HCLK / 25 MHz MPS2 SYSCLK) on both boards. */

void cnt_init(void);
uint32_t cnt_read(void);        /* 32-bit up-counting timer ticks */
uint32_t systick_read(void);    /* raw SYST_CVR (24-bit, down-counting) */

static inline uint32_t ticks_to_insns(uint32_t ticks)
{
    const uint64_t den = (uint64_t)TICK_NS_DEN << ICOUNT_SHIFT;
    return (uint32_t)(((uint64_t)ticks * TICK_NS_NUM + den / 2u) / den);
}
#endif
