/* mexd.h (tools): the subcommands of the `mexd` command. */
#pragma once

int mexd_cmd_bench(int argc, char **argv);
int mexd_cmd_forward(int argc, char **argv);
int mexd_bench_mexd(int argc, char **argv);
int mexd_cmd_extract(int argc, char **argv);
int mexd_bench_backbone(int argc, char **argv);
int mexd_cmd_tiles(int argc, char **argv);
int mexd_cmd_synth_bags(int argc, char **argv);
int mexd_cmd_train(int argc, char **argv);
int mexd_cmd_eval(int argc, char **argv);
int mexd_cmd_classify(int argc, char **argv);
int mexd_cmd_demo(int argc, char **argv);
int mexd_bench_read(int argc, char **argv);
int mexd_bench_train(int argc, char **argv);
/* The median of v[0..n) (sorts v). */
double mexd_median(double *v, int n);
