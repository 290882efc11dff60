/* The CLI's job commands (validate, plan, run, eval, export). */
#ifndef KD_CLI_JOB_COMMANDS_H
#define KD_CLI_JOB_COMMANDS_H

/* Runs `command` with its arguments; returns the exit code, or -1 when
 * command is not a job command. */
int kd_command_job(const char *command, int argc, char **argv);

#endif
