"""yiyun.imaging"""
