/* ARM semihosting on M-profile cores (QEMU passes the calls to the host): print, read a host
 * file, exit with a status. */
#include "semihost.h"

static uint32_t length(const char *s)
{
    uint32_t n = 0;
    while (s[n]) {
        n++;
    }
    return n;
}

void sh_puts(const char *s) { sh_call(SYS_WRITE0, s); }

void sh_put_i32(int32_t v)
{
    char b[12];
    int i = 11;
    uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
    b[i] = 0;
    do {
        b[--i] = (char)('0' + u % 10u);
        u /= 10u;
    } while (u);
    if (v < 0) {
        b[--i] = '-';
    }
    sh_puts(&b[i]);
}

int32_t sh_open(const char *path)
{
    uint32_t block[3];
    block[0] = (uint32_t)path;
    block[1] = 1; /* "rb" */
    block[2] = length(path);
    return sh_call(SYS_OPEN, block);
}

int32_t sh_read(int32_t file, void *buffer, uint32_t size)
{
    uint32_t block[3];
    int32_t missing;
    block[0] = (uint32_t)file;
    block[1] = (uint32_t)buffer;
    block[2] = size;
    missing = sh_call(SYS_READ, block); /* the bytes NOT read */
    return missing < 0 ? -1 : (int32_t)size - missing;
}

void sh_exit(int32_t code)
{
    /* SYS_EXIT_EXTENDED {reason, code}: QEMU exits with `code`. Plain SYS_EXIT only tells
     * 0 from 1. */
    uint32_t block[2];
    block[0] = ADP_Stopped_ApplicationExit;
    block[1] = (uint32_t)code;
    sh_call(SYS_EXIT_EXTENDED, block);
    sh_call(SYS_EXIT, (const void *)ADP_Stopped_ApplicationExit);
    for (;;) {
    }
}
