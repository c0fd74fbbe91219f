/*
 * fuzz.h - the libFuzzer entry point, shared by the fuzz targets and
 * replay.c (which runs a corpus through a target without libFuzzer).
 */
#ifndef STARTTLS_PROXY_FUZZ_H
#define STARTTLS_PROXY_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* FUZZ_CHECK - an invariant of the code under test; abort() if broken */
#define FUZZ_CHECK(cond) \
    do { \
        if (!(cond)) \
            abort(); \
    } while (0)

#endif
