/* The CLI's report command. */
#ifndef KD_CLI_REPORT_COMMAND_H
#define KD_CLI_REPORT_COMMAND_H

/* Runs `kdengine report` with its arguments; returns the exit code. */
int kd_command_report(int argc, char **argv);

#endif
