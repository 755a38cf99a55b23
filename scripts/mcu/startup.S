/* Minimal Cortex-M startup (ARMv6-M Thumb subset: runs on M0 and M3).
 * Vector table: initial SP + reset + core exceptions. Reset handler copies
 * .data from flash, zeroes .bss, paints the stack with STACK_PAINT, calls
 * main(), then exits through semihosting with main's return value. */
    .syntax unified
    .cpu cortex-m0
    .thumb

    .equ STACK_PAINT, 0xC5C5C5C5

    .section .isr_vector,"a",%progbits
    .align 2
    .global __isr_vector
__isr_vector:
    .word _estack             /* 0: initial SP */
    .word Reset_Handler       /* 1: reset */
    .word Fault_Handler       /* 2: NMI */
    .word Fault_Handler       /* 3: HardFault */
    .word Fault_Handler       /* 4: MemManage (v7-M) */
    .word Fault_Handler       /* 5: BusFault  (v7-M) */
    .word Fault_Handler       /* 6: UsageFault (v7-M) */
    .word 0, 0, 0, 0          /* 7-10 reserved */
    .word Fault_Handler       /* 11: SVCall */
    .word Fault_Handler       /* 12: DebugMon (v7-M) */
    .word 0                   /* 13 reserved */
    .word Fault_Handler       /* 14: PendSV */
    .word SysTick_Handler     /* 15: SysTick (weak, see below) */

    .text
    .align 1
    .global Reset_Handler
    .type Reset_Handler, %function
    .thumb_func
Reset_Handler:
    /* copy .data (LMA _sidata -> VMA _sdata.._edata) */
    ldr  r0, =_sidata
    ldr  r1, =_sdata
    ldr  r2, =_edata
1:  cmp  r1, r2
    bhs  2f
    ldr  r3, [r0]
    str  r3, [r1]
    adds r0, #4
    adds r1, #4
    b    1b
2:  /* zero .bss */
    ldr  r1, =_sbss
    ldr  r2, =_ebss
    movs r3, #0
3:  cmp  r1, r2
    bhs  4f
    str  r3, [r1]
    adds r1, #4
    b    3b
4:  /* paint the whole stack region [_sstack, sp) - nothing is on it yet */
    ldr  r1, =_sstack
    mov  r2, sp
    ldr  r3, =STACK_PAINT
5:  cmp  r1, r2
    bhs  6f
    str  r3, [r1]
    adds r1, #4
    b    5b
6:  bl   main
    bl   sh_exit              /* r0 = main's return value; never returns */
7:  b    7b
    .size Reset_Handler, . - Reset_Handler

    .weak SysTick_Handler
    .thumb_set SysTick_Handler, Fault_Handler

    .type Fault_Handler, %function
    .thumb_func
Fault_Handler:
    /* print "FAULT" and exit(3) via semihosting */
    ldr  r1, =fault_msg
    movs r0, #0x04            /* SYS_WRITE0 */
    bkpt 0xab
    movs r0, #3
    bl   sh_exit
8:  b    8b
    .size Fault_Handler, . - Fault_Handler

    .section .rodata.fault_msg,"a",%progbits
fault_msg:
    .asciz "*** FAULT (unexpected exception) ***\n"
