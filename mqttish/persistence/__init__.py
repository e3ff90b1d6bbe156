"""Where sessions and retained messages are kept between broker runs."""
