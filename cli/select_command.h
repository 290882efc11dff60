/* The CLI's select command. */
#ifndef KD_CLI_SELECT_COMMAND_H
#define KD_CLI_SELECT_COMMAND_H

/* Runs `kdengine select` with its arguments; returns the exit code. */
int kd_command_select(int argc, char **argv);

#endif
