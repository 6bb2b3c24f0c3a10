"""Search side of mnv3-nas: data, proxy training, reward, controllers, the search loop, CLI."""
