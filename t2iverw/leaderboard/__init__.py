"""`t2iverw leaderboard`: measured runs and the paper's published rows in one table (Markdown + HTML).

`t2iverw.leaderboard.write.write_leaderboard` does the work; this file stays import-light
so that `t2iverw --help` does not load matplotlib.
"""
