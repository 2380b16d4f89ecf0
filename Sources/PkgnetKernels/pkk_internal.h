/* Private helpers shared by the kernel sources (not installed, not exported). */
#ifndef PKK_INTERNAL_H
#define PKK_INTERNAL_H

#include <stddef.h>

#if defined(__GNUC__)
#define PKK_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define PKK_PRINTF(f, a)
#endif

/* printf-style pkk_set_error (truncates to the slot size). */
void pkk_set_errorf(const char *format, ...) PKK_PRINTF(1, 2);

/* Minimum amount of work (elements touched) before a loop opens an OpenMP
 * parallel region: below this the fork/join costs more than it saves. */
#define PKK_PAR_MIN 32768

#endif /* PKK_INTERNAL_H */
