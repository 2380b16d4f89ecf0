/* Error slot: the message of the last failure on the calling thread. */
#include "pkgnet_kernels.h"
#include "pkk_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define PKK_ERROR_CAPACITY 1024

static _Thread_local char pkk_error_slot[PKK_ERROR_CAPACITY];

void pkk_set_error(const char *message)
{
    if (message == NULL) message = "";
    /* Copy at most capacity-1 bytes; never split a UTF-8 sequence in two. */
    size_t n = strlen(message);
    if (n >= PKK_ERROR_CAPACITY) {
        n = PKK_ERROR_CAPACITY - 1;
        while (n > 0 && ((unsigned char)message[n] & 0xC0) == 0x80) n--;
    }
    /* memmove: the message may point into the slot itself. */
    memmove(pkk_error_slot, message, n);
    pkk_error_slot[n] = '\0';
}

void pkk_set_errorf(const char *format, ...)
{
    char buffer[PKK_ERROR_CAPACITY];
    va_list args;
    va_start(args, format);
    int r = vsnprintf(buffer, sizeof buffer, format, args);
    va_end(args);
    if (r < 0) buffer[0] = '\0';
    pkk_set_error(buffer);
}

const char *pkk_last_error(void)
{
    return pkk_error_slot;
}
