/* The CLI's forward command. */
#ifndef KD_CLI_FORWARD_COMMAND_H
#define KD_CLI_FORWARD_COMMAND_H

/* Runs `kdengine forward` with its arguments; returns the exit code. */
int kd_command_forward(int argc, char **argv);

#endif
