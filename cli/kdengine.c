/* kdengine: the command-line entry point. */
#include <stdio.h>
#include <string.h>

#include <kdengine/kdengine.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: kdengine <command> [options]\n"
            "\n"
            "commands:\n"
            "  version     print the version and what this build contains\n"
            "\n"
            "exit codes: 0 success, 1 the command failed, 2 bad usage\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("%s\n", kd_build_info());
        return 0;
    }
    fprintf(stderr, "kdengine: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
