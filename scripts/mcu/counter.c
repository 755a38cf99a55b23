#include "counter.h"

#define REG(a) (*(volatile uint32_t *)(a))
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)

#if defined(MACH_MICROBIT)
#define T0 0x40008000u
#define T0_START    REG(T0 + 0x000u)
#define T0_STOP     REG(T0 + 0x004u)
#define T0_CLEAR    REG(T0 + 0x00Cu)
#define T0_CAPTURE0 REG(T0 + 0x040u)
#define T0_MODE     REG(T0 + 0x504u)
#define T0_BITMODE  REG(T0 + 0x508u)
#define T0_PRESCALE REG(T0 + 0x510u)
#define T0_CC0      REG(T0 + 0x540u)

void cnt_init(void)
{
    T0_STOP = 1; T0_MODE = 0 /* timer */; T0_BITMODE = 3 /* 32 bit */;
    T0_PRESCALE = 0 /* 16 MHz */; T0_CLEAR = 1; T0_START = 1;
    SYST_CSR = 0; SYST_RVR = 0x00FFFFFFu; SYST_CVR = 0; SYST_CSR = 5; /* enable, cpu clock, no irq */
}
uint32_t cnt_read(void) { T0_CAPTURE0 = 1; return T0_CC0; }

#elif defined(MACH_MPS2)
#define TM0 0x40000000u
#define TM0_CTRL   REG(TM0 + 0x0u)
#define TM0_VALUE  REG(TM0 + 0x4u)
#define TM0_RELOAD REG(TM0 + 0x8u)

void cnt_init(void)
{
    TM0_CTRL = 0; TM0_RELOAD = 0xFFFFFFFFu; TM0_VALUE = 0xFFFFFFFFu; TM0_CTRL = 1;
    SYST_CSR = 0; SYST_RVR = 0x00FFFFFFu; SYST_CVR = 0; SYST_CSR = 5;
}
uint32_t cnt_read(void) { return 0xFFFFFFFFu - TM0_VALUE; }
#endif

uint32_t systick_read(void) { return SYST_CVR; }
