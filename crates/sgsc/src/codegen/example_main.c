/* An example host program for the generated model: reads images of SGSC_INPUT_SIZE bytes each
 * (pixels, channel-major) from a file and prints each one's class, 32-bit logits and class
 * name.
 *   cc -std=c99 -O2 model.c example_main.c -o predict && ./predict images.bin */
#include <stdio.h>
#include <stdlib.h>

#include "model.h"

int main(int argc, char **argv)
{
    static uint8_t pixels[SGSC_INPUT_SIZE];
    int32_t logits[SGSC_CLASSES];
    FILE *file;
    long image = 0;
    if (argc != 2) {
        fprintf(stderr, "usage: %s IMAGES (raw bytes, %d per image)\n", argv[0], SGSC_INPUT_SIZE);
        return 2;
    }
    file = fopen(argv[1], "rb");
    if (!file) {
        fprintf(stderr, "cannot open %s\n", argv[1]);
        return 1;
    }
    while (fread(pixels, 1, sizeof pixels, file) == sizeof pixels) {
        int class = sgsc_predict(pixels, logits);
        int i;
        printf("image %ld: class %d logits", image++, class);
        for (i = 0; i < SGSC_CLASSES; i++) {
            printf(" %ld", (long)logits[i]);
        }
        printf(" (%s)\n", sgsc_class_names[class]);
    }
    fclose(file);
    return 0;
}
