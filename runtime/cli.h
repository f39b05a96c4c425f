/*
** cli.h -- subcommands of the flowrun binary that live in their own files.
** Each takes the arguments after the subcommand name and returns the exit
** status (0 ok, 1 failure, 2 usage or configuration error).
*/
#ifndef FLOWRUN_CLI_H
#define FLOWRUN_CLI_H

int flowrun_mock_main(int argc, char **argv);
int flowrun_repl_main(int argc, char **argv);

#endif
