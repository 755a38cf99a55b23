/* ARM semihosting for M-profile: "bkpt 0xab", r0 = op, r1 = arg/block. */
#ifndef SEMIHOST_H
#define SEMIHOST_H
#include <stdint.h>

#define SYS_OPEN          0x01
#define SYS_CLOSE         0x02
#define SYS_WRITE0        0x04
#define SYS_WRITE         0x05
#define SYS_READ          0x06
#define SYS_FLEN          0x0C
#define SYS_EXIT          0x18
#define SYS_EXIT_EXTENDED 0x20
#define ADP_Stopped_ApplicationExit 0x20026

static inline int32_t sh_call(int32_t op, const void *arg)
{
    register int32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void sh_puts(const char *s);        /* SYS_WRITE0 */
void sh_put_i32(int32_t v);         /* decimal */
int32_t sh_open(const char *path); /* a host file, "rb"; negative on failure */
int32_t sh_read(int32_t file, void *buffer, uint32_t size); /* bytes read, or -1 */
void sh_exit(int32_t code) __attribute__((noreturn));
#endif
