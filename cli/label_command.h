/* The CLI's label command. */
#ifndef KD_CLI_LABEL_COMMAND_H
#define KD_CLI_LABEL_COMMAND_H

/* Runs `kdengine label` with its arguments; returns the exit code. */
int kd_command_label(int argc, char **argv);

#endif
